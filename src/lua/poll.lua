-- poll: (placeholder, being written) the poll handles of a job's asynchronous provider calls.
return 0
