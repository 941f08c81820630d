-- breaker: (placeholder, being written) per-model circuit breakers.
return 0
