/*
 * nsbox-helper: the small program nsbox runs inside a box when a step needs a process of its own.
 *
 * nsbox's child shares the caller's memory until it execs, so anything that must outlive that moment
 * or needs a single-threaded process is done here, after an exec into this program (from a memfd):
 *
 *   init  — PID 1 for init=True: starts the command as PID 2, forwards signals to it, reaps every
 *           zombie, and exits with the command's status (128+N when a signal N killed it, as tini).
 *   exec  — joins a time namespace (setns(CLONE_NEWTIME) needs a process whose memory is its own),
 *           then execs the command. ERRFD is then a socket: before the exec the helper sends nsbox the
 *           read end of a new pipe (SCM_RIGHTS) whose write end only it holds, so that EOF on that pipe
 *           means "exec'd" even when another process of the caller's holds a copy of ERRFD.
 *   janitor — outlives the caller of an nsbox.Network made as root: when the caller's end of a socket
 *           closes without saying "x" (done), sends a netlink message nsbox prepared (deleting the
 *           bridge), so a killed caller leaves no bridge behind.
 *
 * argv: nsbox-helper MODE ERRFD TIMEFD NPATHS PATH... ARGV...
 *       nsbox-helper janitor FD HEX-MESSAGE
 * Failures are written to ERRFD as nsbox's (step, errno) record, like nsbox's own child does.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <linux/netlink.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLONE_NEWTIME
#define CLONE_NEWTIME 0x00000080
#endif

/* The step and message codes, generated from the Rust source by build.rs. */
#include "nsbox-protocol.h"

extern char **environ;
static int errfd = -1;

static void send_record(uint32_t stage, int32_t value) {
    unsigned char rec[8];
    memcpy(rec, &stage, 4);
    memcpy(rec + 4, &value, 4);
    if (write(errfd, rec, sizeof rec) < 0) { /* nothing more we can do */ }
}

static void report(uint32_t stage, int32_t err) {
    send_record(stage, err);
    _exit(127);
}

/* exec mode: a pipe of our own replaces ERRFD; nsbox gets its read end with a "handoff" record. */
static void hand_over_exec_pipe(void) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) report(NSBOX_STEP_EXEC_PIPE, errno);
    unsigned char rec[8];
    uint32_t stage = NSBOX_MSG_HANDOFF;
    int32_t zero = 0;
    memcpy(rec, &stage, 4);
    memcpy(rec + 4, &zero, 4);
    struct iovec iov = {.iov_base = rec, .iov_len = sizeof rec};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof control.buf};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cmsg), &p[0], sizeof(int));
    ssize_t n;
    do n = sendmsg(errfd, &msg, MSG_NOSIGNAL); while (n < 0 && errno == EINTR);
    if (n != (ssize_t)sizeof rec) report(NSBOX_STEP_EXEC_PIPE, n < 0 ? errno : EIO);
    close(p[0]);
    close(errfd);
    errfd = p[1];
}

static void exec_command(char **paths, int npaths, char **argv) {
    int saved = 0, last = ENOENT;
    for (int i = 0; i < npaths; i++) {
        execve(paths[i], argv, environ);
        last = errno;
        if (last != ENOENT && last != ENOTDIR && saved == 0) saved = last;
    }
    report(NSBOX_STEP_EXEC, saved ? saved : last);
}

static const int forwarded[] = {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2, SIGQUIT, SIGWINCH, SIGCONT, SIGALRM};

/* Show up as "nsbox-init" in ps rather than with our whole argv (the command's is its own). */
static void retitle(int argc, char **argv) {
    char *end = argv[argc - 1] + strlen(argv[argc - 1]);
    memset(argv[0], 0, (size_t)(end - argv[0]));
    strcpy(argv[0], "nsbox-init");
}

static int init(int argc, char **argv_all, char **paths, int npaths, char **argv) {
    sigset_t wanted, old;
    sigemptyset(&wanted);
    sigaddset(&wanted, SIGCHLD);
    for (size_t i = 0; i < sizeof forwarded / sizeof *forwarded; i++) sigaddset(&wanted, forwarded[i]);
    /* Blocked signals reach PID 1 even without a handler, and wait here for sigwaitinfo. */
    sigprocmask(SIG_BLOCK, &wanted, &old);

    /* A pipe of our own tells us when the command has exec'd (EOF), so that nsbox waits for a record
       ("running", or the command's failure) and never for EOF on its error pipe, whose write end
       another process of the caller's may have inherited. */
    int synced[2];
    if (pipe2(synced, O_CLOEXEC) < 0) report(NSBOX_STEP_INIT, errno);
    pid_t child = fork();
    if (child < 0) report(NSBOX_STEP_INIT, errno);
    if (child == 0) {
        sigprocmask(SIG_SETMASK, &old, NULL);
        exec_command(paths, npaths, argv);
    }
    close(synced[1]);
    char byte;
    while (read(synced[0], &byte, 1) < 0 && errno == EINTR) {
    }
    close(synced[0]);
    /* Named before nsbox hears "running", so that a process list taken then shows "nsbox-init". */
    retitle(argc, argv_all);
    /* After a failure the command wrote its record before exiting: nsbox reads that one first. */
    send_record(NSBOX_MSG_RUNNING, 0);
    close(errfd);

    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(&wanted, &info);
        if (sig < 0) continue;
        if (sig != SIGCHLD) {
            kill(child, sig);
            continue;
        }
        for (;;) {
            int status;
            pid_t done = waitpid(-1, &status, WNOHANG);
            if (done <= 0) break;
            if (done == child) {
                /* Our exit makes the kernel kill whatever is left in the namespace. */
                if (WIFEXITED(status)) return WEXITSTATUS(status);
                return 128 + WTERMSIG(status);
            }
        }
    }
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static int janitor(int fd, const char *hex) {
    /* Outlive the caller (the spawn set a parent-death signal) and its terminal's signals. */
    prctl(PR_SET_PDEATHSIG, 0);
    setsid();
    unsigned char msg[512];
    size_t len = strlen(hex) / 2;
    if (len == 0 || len > sizeof msg) return 2;
    for (size_t i = 0; i < len; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) return 2;
        msg[i] = (unsigned char)(hi << 4 | lo);
    }
    if (write(fd, "a", 1) != 1) return 1;
    char c = 0;
    ssize_t n;
    do n = read(fd, &c, 1); while (n < 0 && errno == EINTR);
    if (n == 1 && c == 'x') return 0;
    int sock = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
    if (sock < 0) return 1;
    if (write(sock, msg, len) < 0) return 1;
    unsigned char ack[1024];
    if (read(sock, ack, sizeof ack) < 0) return 1;
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "janitor") == 0) return janitor(atoi(argv[2]), argv[3]);
    if (argc < 6) return 127;
    const char *mode = argv[1];
    errfd = atoi(argv[2]);
    int timefd = atoi(argv[3]);
    int npaths = atoi(argv[4]);
    if (npaths < 1 || 5 + npaths >= argc) return 127;
    char **paths = argv + 5;
    char **command = argv + 5 + npaths;
    fcntl(errfd, F_SETFD, FD_CLOEXEC);

    if (timefd >= 0) {
        if (setns(timefd, CLONE_NEWTIME) < 0) report(NSBOX_STEP_JOIN_TIME, errno);
        close(timefd);
    }
    if (strcmp(mode, "init") == 0) return init(argc, argv, paths, npaths, command);
    hand_over_exec_pipe();
    exec_command(paths, npaths, command);
    return 127;
}
