// How long a new process takes to get into a fresh cgroup, two ways: fork() then a write of "0" to the cgroup's
// cgroup.procs (what nsbox's child does on cgroup v1, and in nsbox.call), and clone3() with CLONE_INTO_CGROUP
// (nsbox's exec path on cgroup v2). Each iteration makes the cgroup, times fork/clone to waitpid of a child that
// only enters and exits, and removes the cgroup; GAP_MS apart, since a move's cost depends on how recently the
// last one was made (the kernel's cgroup threadgroup lock and its RCU grace period).
//
//   cgroup_entry DIR MODE GAP_MS N      MODE: write | into (cgroup v2 only)
//
// Prints "median_us max_us".
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}

static int by_value(const void *a, const void *b) {
    long x = *(const long *)a, y = *(const long *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s DIR write|into GAP_MS N\n", argv[0]);
        return 2;
    }
    int into = strcmp(argv[2], "into") == 0, gap_ms = atoi(argv[3]), n = atoi(argv[4]);
    if (n < 1 || n > 10000) return 2;
    long *took = calloc(n, sizeof *took);
    char dir[4096], procs[4200];
    snprintf(dir, sizeof dir, "%s/nsbox-bench-entry-%d", argv[1], getpid());
    snprintf(procs, sizeof procs, "%s/cgroup.procs", dir);
    for (int i = 0; i < n; i++) {
        if (mkdir(dir, 0755) != 0) { perror("mkdir"); return 1; }
        int procs_fd = open(procs, O_WRONLY | O_CLOEXEC), dir_fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        long start = now_ns();
        pid_t pid;
        if (into) {
            struct clone_args args;
            memset(&args, 0, sizeof args);
            args.flags = CLONE_INTO_CGROUP;
            args.exit_signal = SIGCHLD;
            args.cgroup = dir_fd;
            pid = syscall(SYS_clone3, &args, sizeof args);
        } else {
            pid = fork();
            if (pid == 0 && write(procs_fd, "0", 1) != 1) _exit(1);
        }
        if (pid == 0) _exit(0);
        if (pid < 0) { perror("clone"); return 1; }
        int status;
        waitpid(pid, &status, 0);
        took[i] = now_ns() - start;
        close(procs_fd);
        close(dir_fd);
        rmdir(dir);
        if (status != 0) { fprintf(stderr, "the child could not enter\n"); return 1; }
        if (gap_ms) usleep(gap_ms * 1000);
    }
    qsort(took, n, sizeof *took, by_value);
    printf("%ld %ld\n", took[n / 2] / 1000, took[n - 1] / 1000);
    return 0;
}
