/* A power cut for one process's files, for tests/reliability/test_power_loss.py (LD_PRELOAD).
 *
 * Before each write(), pwrite(), pwrite64(), writev(), ftruncate() or ftruncate64() (RocksDB uses
 * the first ones, SQLite pwrite64 and ftruncate64) to a regular file under $POWERCUT_DIR it
 * appends an undo record (path, offset, size before, the bytes about to be overwritten) to
 * $POWERCUT_LOG; fsync() and fdatasync() append a "synced" record for the file. After the process
 * is killed, the test undoes every write not followed by a sync of its file: what a power cut
 * leaves of data in the page cache. File creation, rename and unlink are kept (a lenient model of
 * metadata: ext4's journal commits them within seconds, and RocksDB syncs its directory anyway).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void *, size_t);
static ssize_t (*real_pwrite)(int, const void *, size_t, off_t);
static ssize_t (*real_writev)(int, const struct iovec *, int);
static int (*real_fsync)(int);
static int (*real_fdatasync)(int);
static int (*real_ftruncate)(int, off_t);
static int log_fd = -1;
static const char *dir;
static size_t dir_len;

__attribute__((constructor)) static void init(void) {
    real_write = dlsym(RTLD_NEXT, "write");
    real_pwrite = dlsym(RTLD_NEXT, "pwrite");
    real_writev = dlsym(RTLD_NEXT, "writev");
    real_fsync = dlsym(RTLD_NEXT, "fsync");
    real_fdatasync = dlsym(RTLD_NEXT, "fdatasync");
    real_ftruncate = dlsym(RTLD_NEXT, "ftruncate");
    dir = getenv("POWERCUT_DIR");
    const char *log = getenv("POWERCUT_LOG");
    if (dir && log) {
        dir_len = strlen(dir);
        log_fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    }
}

/* The path of fd when it is a regular file under dir; its size in *size. */
static int watched(int fd, char *path, size_t cap, off_t *size) {
    struct stat st;
    if (log_fd < 0 || fd == log_fd || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    char link[64];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, path, cap - 1);
    if (n <= 0 || (size_t)n < dir_len || strncmp(path, dir, dir_len) != 0) return 0;
    path[n] = 0;
    *size = st.st_size;
    return (int)n;
}

/* One record, one append: 'W' | 'S', path length u32, path, offset u64, size before u64,
 * old length u32, old bytes. */
static void record(char kind, int fd, off_t offset, size_t length) {
    char path[4096];
    off_t size;
    int path_len = watched(fd, path, sizeof path, &size);
    if (!path_len) return;
    uint32_t old_len = 0;
    if (kind == 'W' && offset < size) old_len = (uint32_t)((size - offset) < (off_t)length ? (size - offset) : (off_t)length);
    size_t total = 1 + 4 + (size_t)path_len + 8 + 8 + 4 + old_len;
    char *buffer = malloc(total);
    if (!buffer) abort();
    char *at = buffer;
    *at++ = kind;
    uint32_t plen = (uint32_t)path_len;
    uint64_t off = (uint64_t)offset, before = (uint64_t)size;
    memcpy(at, &plen, 4); at += 4;
    memcpy(at, path, plen); at += plen;
    memcpy(at, &off, 8); at += 8;
    memcpy(at, &before, 8); at += 8;
    memcpy(at, &old_len, 4); at += 4;
    if (old_len && pread(fd, at, old_len, offset) != (ssize_t)old_len) abort();
    if (real_write(log_fd, buffer, total) != (ssize_t)total) abort();
    free(buffer);
}

ssize_t write(int fd, const void *data, size_t length) {
    if (log_fd >= 0 && fd > 2) {
        off_t position = lseek(fd, 0, SEEK_CUR);
        if (position >= 0) {
            if (fcntl(fd, F_GETFL) & O_APPEND) position = lseek(fd, 0, SEEK_END), lseek(fd, 0, SEEK_CUR);
            record('W', fd, position, length);
        }
    }
    return real_write(fd, data, length);
}

ssize_t pwrite(int fd, const void *data, size_t length, off_t offset) {
    if (log_fd >= 0 && fd > 2) record('W', fd, offset, length);
    return real_pwrite(fd, data, length, offset);
}

ssize_t pwrite64(int fd, const void *data, size_t length, off_t offset) {
    if (log_fd >= 0 && fd > 2) record('W', fd, offset, length);
    return real_pwrite(fd, data, length, offset);  /* the same call on 64-bit glibc */
}

int ftruncate64(int fd, off_t length) {
    if (log_fd >= 0) record('W', fd, length, (size_t)-1 >> 1);
    return real_ftruncate(fd, length);
}

ssize_t writev(int fd, const struct iovec *parts, int count) {
    if (log_fd >= 0 && fd > 2) {
        size_t length = 0;
        for (int i = 0; i < count; i++) length += parts[i].iov_len;
        off_t position = lseek(fd, 0, SEEK_CUR);
        if (position >= 0) record('W', fd, position, length);
    }
    return real_writev(fd, parts, count);
}

int ftruncate(int fd, off_t length) {
    if (log_fd >= 0) record('W', fd, length, (size_t)-1 >> 1);
    return real_ftruncate(fd, length);
}

int fsync(int fd) {
    int result = real_fsync(fd);
    if (result == 0 && log_fd >= 0) record('S', fd, 0, 0);
    return result;
}

int fdatasync(int fd) {
    int result = real_fdatasync(fd);
    if (result == 0 && log_fd >= 0) record('S', fd, 0, 0);
    return result;
}
