/* provider_dashscope.c - placeholder until the adapter lands. */
#include <stdio.h>
#include "imgq/provider.h"

imgq_http_request *imgq_dashscope_build(const struct imgq_provider_endpoint *ep,
                                        const struct imgq_job_spec *spec, int n)
{
    (void)spec;
    (void)n;
    return imgq_http_request_new("GET", ep->base_url);
}
void imgq_dashscope_parse(const imgq_http_response *res, int n, struct imgq_provider_result *out)
{
    (void)n;
    imgq__provider_transport(res, out);
    out->cls = IMGQ_CLASS_INVALID_REQUEST;
}
imgq_http_request *imgq_dashscope_build_poll(const struct imgq_provider_endpoint *ep, const char *h)
{
    (void)h;
    return imgq_http_request_new("GET", ep->base_url);
}
void imgq_dashscope_parse_poll(const imgq_http_response *res, int n,
                               struct imgq_provider_result *out)
{
    imgq_dashscope_parse(res, n, out);
}
