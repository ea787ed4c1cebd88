/* Holds a network namespace in one of the ways a walk of /proc cannot see, then waits to be killed.
 *
 *   nsholder MODE NETNS_PATH [EXTRA]
 *
 * Prints "ready" once the namespace is held only the MODE's way (the path's fd is closed where the
 * mode does not need it), "unsupported" (exit 3) when the kernel refuses the mode.  Compiled by the
 * tests (tests/integration/test_netns_truth.py) into a temporary directory.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <linux/io_uring.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *path, *extra;

static void ready(void) { printf("ready\n"); fflush(stdout); }
static void die(const char *what) { fprintf(stderr, "%s: %s\n", what, strerror(errno)); exit(2); }
static void forever(void) { for (;;) pause(); }

static void *thread_idle(void *arg) { (void)arg; forever(); return NULL; }

static void *thread_mount(void *arg) {
    (void)arg;
    if (unshare(CLONE_NEWNS) < 0) die("unshare(CLONE_NEWNS)");
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) die("make / private");
    int t = open(extra, O_WRONLY | O_CREAT, 0600);
    if (t < 0) die("create mount point");
    close(t);
    if (mount(path, extra, NULL, MS_BIND, NULL) < 0) die("bind mount");
    ready();
    forever();
    return NULL;
}

static void *thread_files(void *arg) {
    (void)arg;
    if (unshare(CLONE_FILES) < 0) die("unshare(CLONE_FILES)");
    if (open(path, O_RDONLY | O_CLOEXEC) < 0) die("open netns");
    ready();
    forever();
    return NULL;
}

static int in_netns(int nsfd, int (*make)(void)) {
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    if (self < 0 || setns(nsfd, CLONE_NEWNET) < 0) die("setns in");
    int fd = make();
    if (setns(self, CLONE_NEWNET) < 0) die("setns back");
    close(self);
    return fd;
}

static int make_socket(void) { return socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0); }

static int make_tap(void) {
    int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
    if (fd < 0) return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
    strcpy(ifr.ifr_name, "nsholdtap0");
    if (ioctl(fd, TUNSETIFF, &ifr) < 0) { close(fd); return -1; }
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 3) return 64;
    const char *mode = argv[1];
    path = argv[2];
    extra = argc > 3 ? argv[3] : NULL;
    pthread_t t;

    if (!strcmp(mode, "fd")) {  /* an fd opened through the mount, which the test then detaches */
        if (open(path, O_RDONLY | O_CLOEXEC) < 0) die("open netns");
        ready();
        forever();
    }
    if (!strcmp(mode, "main-exit")) {  /* the fd outlives the main thread */
        if (open(path, O_RDONLY | O_CLOEXEC) < 0) die("open netns");
        if (pthread_create(&t, NULL, thread_idle, NULL)) die("pthread_create");
        ready();
        pthread_exit(NULL);
    }
    if (!strcmp(mode, "thread-mount")) {  /* a bind mount in a thread's own mount namespace */
        if (pthread_create(&t, NULL, thread_mount, NULL)) die("pthread_create");
        pthread_join(t, NULL);
        return 0;
    }
    if (!strcmp(mode, "thread-files")) {  /* an fd in a thread's own fd table */
        if (pthread_create(&t, NULL, thread_files, NULL)) die("pthread_create");
        pthread_join(t, NULL);
        return 0;
    }
    int nsfd = open(path, O_RDONLY | O_CLOEXEC);
    if (nsfd < 0) die("open netns");
    if (!strcmp(mode, "scm-rights")) {  /* sent over a unix socket, closed, never received */
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) < 0) die("socketpair");
        char byte = 'x';
        struct iovec iov = {&byte, 1};
        char cbuf[CMSG_SPACE(sizeof(int))];
        memset(cbuf, 0, sizeof cbuf);
        struct msghdr msg = {0};
        msg.msg_iov = &iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf;
        msg.msg_controllen = sizeof cbuf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &nsfd, sizeof(int));
        if (sendmsg(sv[0], &msg, 0) < 0) die("sendmsg");
        close(nsfd);
        ready();
        forever();
    }
    if (!strcmp(mode, "io-uring")) {  /* registered in an io_uring, then closed */
        struct io_uring_params p;
        memset(&p, 0, sizeof p);
        int ring = syscall(__NR_io_uring_setup, 4, &p);
        if (ring < 0) { printf("unsupported\n"); return 3; }
        if (syscall(__NR_io_uring_register, ring, IORING_REGISTER_FILES, &nsfd, 1) < 0) { printf("unsupported\n"); return 3; }
        close(nsfd);
        ready();
        forever();
    }
    if (!strcmp(mode, "proc-net-dev")) {  /* /proc/<pid>/net/dev of a task that was in it, the task gone */
        int pipefd[2];
        if (pipe(pipefd) < 0) die("pipe");
        pid_t child = fork();
        if (child == 0) {
            if (setns(nsfd, CLONE_NEWNET) < 0) die("setns");
            if (write(pipefd[1], "x", 1) != 1) die("write");
            forever();
        }
        char byte;
        if (read(pipefd[0], &byte, 1) != 1) die("read");
        char name[64];
        snprintf(name, sizeof name, "/proc/%d/net/dev", (int)child);
        if (open(name, O_RDONLY | O_CLOEXEC) < 0) die("open net/dev");
        kill(child, SIGKILL);
        waitpid(child, NULL, 0);
        close(nsfd);
        ready();
        forever();
    }
    if (!strcmp(mode, "socket") || !strcmp(mode, "tap")) {  /* made in the namespace, kept from outside */
        int fd = in_netns(nsfd, strcmp(mode, "tap") ? make_socket : make_tap);
        if (fd < 0) { printf("unsupported\n"); return 3; }
        close(nsfd);
        ready();
        forever();
    }
    return 64;
}
