#include "sim.h"
void sim_bfl_handle(struct sim *s, imgq_httpd_request *req)
{
    (void)s;
    imgq_httpd_respond(req, 501, NULL, 0, NULL, 0);
}
