/* bench-mda MAILDIR: one message from stdin into MAILDIR/tmp/NAME, fsync, rename into new/. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: bench-mda MAILDIR\n");
        return 64;
    }
    size_t size = 0, room = 1 << 16;
    char *data = malloc(room);
    for (;;) {
        if (data == NULL) {
            perror("malloc");
            return 75;
        }
        if (size == room) {
            room *= 2;
            data = realloc(data, room);
            continue;
        }
        ssize_t got = read(0, data + size, room - size);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            perror("read");
            return 75;
        }
        if (got == 0)
            break;
        size += (size_t)got;
    }
    struct timeval now;
    gettimeofday(&now, NULL);
    char host[256] = "localhost";
    gethostname(host, sizeof host - 1);
    char name[512], temporary[4096], final[4096];
    snprintf(name, sizeof name, "%ld.M%ldP%d.%s", (long)now.tv_sec, (long)now.tv_usec,
             (int)getpid(), host);
    snprintf(temporary, sizeof temporary, "%s/tmp/%s", argv[1], name);
    snprintf(final, sizeof final, "%s/new/%s", argv[1], name);
    int fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        perror(temporary);
        return 75;
    }
    for (size_t done = 0; done < size;) {
        ssize_t put = write(fd, data + done, size - done);
        if (put < 0 && errno == EINTR)
            continue;
        if (put < 0) {
            perror("write");
            unlink(temporary);
            return 75;
        }
        done += (size_t)put;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(temporary, final) != 0) {
        perror(temporary);
        unlink(temporary);
        return 75;
    }
    return 0;
}
