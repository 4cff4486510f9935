/*
 * The floor: the bare system calls nsbox makes for one box, in a loop, timed per iteration.
 *
 *   floor N NAMESPACES [JOBS]   spawn /bin/true N times in new namespaces
 *   floor N enter:PID           spawn /bin/true N times inside PID's namespaces
 *
 * NAMESPACES is a comma-separated subset of pid,mnt,proc,uts,ipc,net,cgroup,user ("proc" implies "mnt").
 * Each iteration is what nsbox does: one clone(CLONE_VM | CLONE_VFORK | flags | SIGCHLD) on a separate
 * stack; the child writes its own id maps (user), brings lo up (net), makes / recursively private and
 * mounts a fresh proc (proc), then execs /bin/true; the parent waits for it. No error pipe, no fd or
 * signal hygiene: nothing here is optional, so nothing can beat it by much.
 *
 * Output: one line per iteration, its time in nanoseconds. Given JOBS (1 included), JOBS processes each run
 * N iterations at once (released together) and the only line is "total NS", the wall time of all of them.
 * "enter:PID" joins PID's PID namespace once up front (it only affects children), and each child joins
 * the other namespaces that differ from ours with setns(2) before exec: the floor for entering a box.
 *
 * Exit status: 0, or 1 with a message on stderr. A child that fails exits 100 + the step number.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define STACK_SIZE (64 * 1024)
#define MAX_NS 8

extern char **environ;

struct plan {
    int user, net, proc;
    char uid_map[64], gid_map[64];
    int ns_fds[MAX_NS];
    int n_ns;
};

static char *const true_argv[] = {"true", NULL};

static void write_file(const char *path, const char *text, int step) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    size_t len = strlen(text);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len)
        _exit(100 + step);
    close(fd);
}

static int child(void *arg) {
    struct plan *p = arg;
    for (int i = 0; i < p->n_ns; i++)
        if (setns(p->ns_fds[i], 0) < 0)
            _exit(100);
    if (p->user) {
        write_file("/proc/self/setgroups", "deny", 1);
        write_file("/proc/self/uid_map", p->uid_map, 2);
        write_file("/proc/self/gid_map", p->gid_map, 3);
    }
    if (p->net) {
        struct ifreq ifr;
        int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        memset(&ifr, 0, sizeof ifr);
        strcpy(ifr.ifr_name, "lo");
        if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
            _exit(104);
        ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
        if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
            _exit(104);
        close(s);
    }
    if (p->proc) {
        if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
            _exit(105);
        if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
            _exit(106);
    }
    execve("/bin/true", true_argv, environ);
    _exit(107);
}

static long long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void die(const char *what) {
    fprintf(stderr, "floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* One iteration: clone, wait. Returns 0, or the child's bad status. */
static int spawn_once(struct plan *p, int flags, char *stack_top) {
    int status;
    pid_t pid = clone(child, stack_top, flags, p);
    if (pid < 0)
        die("clone");
    while (waitpid(pid, &status, __WALL) < 0)
        if (errno != EINTR)
            die("waitpid");
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : status;
}

static void loop(struct plan *p, int flags, long n, int print) {
    char *stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED)
        die("mmap");
    for (long i = 0; i < n; i++) {
        long long t0 = now_ns();
        int bad = spawn_once(p, flags, stack + STACK_SIZE);
        long long t1 = now_ns();
        if (bad) {
            fprintf(stderr, "floor: child failed: %s %d\n", WIFEXITED(bad) ? "exit status" : "signal",
                    WIFEXITED(bad) ? WEXITSTATUS(bad) : WTERMSIG(bad));
            exit(1);
        }
        if (print)
            printf("%lld\n", t1 - t0);
    }
}

static int parse_namespaces(char *list, struct plan *p) {
    int flags = 0;
    for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
        if (!strcmp(tok, "pid")) flags |= CLONE_NEWPID;
        else if (!strcmp(tok, "mnt")) flags |= CLONE_NEWNS;
        else if (!strcmp(tok, "proc")) { flags |= CLONE_NEWNS; p->proc = 1; }
        else if (!strcmp(tok, "uts")) flags |= CLONE_NEWUTS;
        else if (!strcmp(tok, "ipc")) flags |= CLONE_NEWIPC;
        else if (!strcmp(tok, "net")) { flags |= CLONE_NEWNET; p->net = 1; }
        else if (!strcmp(tok, "cgroup")) flags |= CLONE_NEWCGROUP;
        else if (!strcmp(tok, "user")) { flags |= CLONE_NEWUSER; p->user = 1; }
        else if (strcmp(tok, "none")) { fprintf(stderr, "floor: unknown namespace %s\n", tok); exit(2); }
    }
    snprintf(p->uid_map, sizeof p->uid_map, "0 %u 1", (unsigned)geteuid());
    snprintf(p->gid_map, sizeof p->gid_map, "0 %u 1", (unsigned)getegid());
    return flags;
}

/* Opens PID's namespaces that differ from ours; joins its PID namespace (for our children) right away. */
static void prepare_enter(long target, struct plan *p) {
    static const char *names[] = {"user", "cgroup", "ipc", "uts", "net", "mnt", "time"};
    char path[64], self[64];
    struct stat theirs, ours;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "/proc/%ld/ns/%s", target, names[i]);
        snprintf(self, sizeof self, "/proc/self/ns/%s", names[i]);
        if (stat(path, &theirs) < 0 || stat(self, &ours) < 0)
            continue;
        if (theirs.st_ino == ours.st_ino && theirs.st_dev == ours.st_dev)
            continue;
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            die(path);
        p->ns_fds[p->n_ns++] = fd;
    }
    snprintf(path, sizeof path, "/proc/%ld/ns/pid", target);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWPID) < 0)
        die("join the PID namespace");
    close(fd);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: floor N NAMESPACES [JOBS] | floor N enter:PID\n");
        return 2;
    }
    long n = strtol(argv[1], NULL, 10);
    int jobs = argc > 3 ? atoi(argv[3]) : 1;
    struct plan p;
    memset(&p, 0, sizeof p);
    int flags = CLONE_VM | CLONE_VFORK | SIGCHLD;
    if (!strncmp(argv[2], "enter:", 6))
        prepare_enter(strtol(argv[2] + 6, NULL, 10), &p);
    else
        flags |= parse_namespaces(argv[2], &p);

    if (jobs <= 1 && argc <= 3) {
        loop(&p, flags, n, 1);
        return 0;
    }
    /* JOBS workers, released together through a pipe; the wall time covers all of them. */
    int go[2];
    if (pipe(go) < 0)
        die("pipe");
    for (int j = 0; j < jobs; j++) {
        pid_t w = fork();
        if (w < 0)
            die("fork");
        if (w == 0) {
            char c;
            close(go[1]);
            if (read(go[0], &c, 1) < 0)
                _exit(1);
            loop(&p, flags, n, 0);
            _exit(0);
        }
    }
    close(go[0]);
    usleep(20000); /* let every worker reach its read() */
    long long t0 = now_ns();
    close(go[1]);
    int status, failed = 0;
    for (int j = 0; j < jobs; j++) {
        if (wait(&status) < 0)
            die("wait");
        failed |= !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    }
    long long t1 = now_ns();
    if (failed)
        return 1;
    printf("total %lld\n", t1 - t0);
    return 0;
}
