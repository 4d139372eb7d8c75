/* bench-run OUT UID GID PROGRAM [ARG...]: run PROGRAM (as UID and GID unless -1) and write to
   OUT its wall seconds (fork to wait4), exit status, and CPU seconds and peak RSS (itself and
   the children it reaped). A small process of its own, so that no parent's memory is charged
   to PROGRAM's peak (after vfork or fork, exec carries the old peak over). */
#define _GNU_SOURCE
#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: bench-run OUT UID GID PROGRAM [ARG...]\n");
        return 2;
    }
    long uid = strtol(argv[2], NULL, 10), gid = strtol(argv[3], NULL, 10);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 2;
    }
    if (pid == 0) {
        if (gid >= 0 && (setgroups(0, NULL) != 0 || setgid((gid_t)gid) != 0)) {
            perror("setgid");
            _exit(127);
        }
        if (uid >= 0 && setuid((uid_t)uid) != 0) {
            perror("setuid");
            _exit(127);
        }
        execvp(argv[4], argv + 4);
        perror(argv[4]);
        _exit(127);
    }
    int status;
    struct rusage usage;
    while (wait4(pid, &status, 0, &usage) < 0) {
        if (errno != EINTR) {
            perror("wait4");
            return 2;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    FILE *out = fopen(argv[1], "w");
    if (out == NULL) {
        perror(argv[1]);
        return 2;
    }
    fprintf(out,
            "{\"wall\": %.6f, \"exit\": %d, \"signal\": %d, \"user\": %.6f, \"system\": %.6f, "
            "\"maxrss_kib\": %ld}\n",
            (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
            WIFEXITED(status) ? WEXITSTATUS(status) : -1,
            WIFSIGNALED(status) ? WTERMSIG(status) : 0,
            (double)usage.ru_utime.tv_sec + (double)usage.ru_utime.tv_usec / 1e6,
            (double)usage.ru_stime.tv_sec + (double)usage.ru_stime.tv_usec / 1e6, usage.ru_maxrss);
    return fclose(out) == 0 ? 0 : 2;
}
