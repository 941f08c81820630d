/* TEMP stub (not committed): replaced by h2's provider_fetch.c */
#include "imgq/provider.h"
imgq_http_request *imgq_provider_fetch_build(const char *url, long timeout_ms)
{
    (void)timeout_ms;
    return imgq_http_request_new("GET", url);
}
void imgq_provider_fetch_parse(const imgq_http_response *res, struct imgq_provider_result *out)
{
    imgq__provider_transport(res, out);
}
bool imgq_provider_url_trusted(const char *base_url, const char *url)
{
    (void)base_url;
    (void)url;
    return false;
}
