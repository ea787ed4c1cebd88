/* The CRI tests' sandbox ("pause") process: holds the pod's namespaces and sleeps until asked to
 * stop.  Built statically by the test run, packed as an OCI image and imported: no registry. */
#include <signal.h>
#include <unistd.h>

static void stop(int sig)
{
    (void)sig;
    _exit(0);
}

int main(void)
{
    signal(SIGTERM, stop);
    signal(SIGINT, stop);
    for (;;)
        pause();
}
