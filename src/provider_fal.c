/* provider_fal.c - placeholder until the adapter lands. */
#include <stdio.h>
#include "imgq/provider.h"

imgq_http_request *imgq_fal_build(const struct imgq_provider_endpoint *ep,
                                  const struct imgq_job_spec *spec, int n)
{
    (void)spec;
    (void)n;
    return imgq_http_request_new("GET", ep->base_url);
}
void imgq_fal_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    (void)n;
    imgq__provider_transport(res, out);
    out->cls = IMGQ_CLASS_INVALID_REQUEST;
}
imgq_http_request *imgq_fal_build_poll(const struct imgq_provider_endpoint *ep, const char *h)
{
    (void)h;
    return imgq_http_request_new("GET", ep->base_url);
}
void imgq_fal_parse_poll(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    imgq_fal_parse(res, n, out);
}
