/* Stand-in for the two agnhost subcommands the upstream storage specs use (written here from
 * the behaviour the specs expect, not from agnhost's code):
 *
 *   agnhost [pause]          print "Paused", wait for SIGTERM/SIGINT, exit 0 (reaps children)
 *   agnhost mounttest ...    with umask 0: write "mount-tester new file\n" to --new_file_<perm>
 *                            paths, then print what --fs_type, --file_mode, --file_perm,
 *                            --file_owner, --file_content ask, and poll --file_content_in_loop
 *                            (every 2 s for --retry_time seconds, until the expected content
 *                            unless --break_on_expected_content=false). Output lines are the
 *                            ones the specs match: content of file "<path>": <content>
 *
 * Flags are --name=value or --name value. Exit 1 when any step failed, 2 on bad usage.
 * Built with gcc -static by devtools/k8s/e2e_images. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CONTENT "mount-tester new file\n"
#define TMPFS_MAGIC_ 0x01021994

static void on_term(int sig) {
    (void)sig;
    _exit(0);
}

static void on_chld(int sig) {
    (void)sig;
    while (waitpid(-1, NULL, WNOHANG) > 0) {
    }
}

static int cmd_pause(void) {
    struct sigaction term = {.sa_handler = on_term};
    struct sigaction chld = {.sa_handler = on_chld, .sa_flags = SA_NOCLDSTOP};
    sigaction(SIGTERM, &term, NULL);
    sigaction(SIGINT, &term, NULL);
    sigaction(SIGCHLD, &chld, NULL);
    printf("Paused\n");
    fflush(stdout);
    for (;;) {
        pause();
    }
    return 0;
}

/* A path quoted as Go's %q quotes printable ASCII ("\"" and "\\" escaped, others as \xNN). */
static void print_quoted(const char *s) {
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            printf("\\%c", *p);
        } else if (*p < 0x20 || *p >= 0x7f) {
            printf("\\x%02x", *p);
        } else {
            putchar(*p);
        }
    }
    putchar('"');
}

static void say(const char *what, const char *path, const char *fmt, const char *val) {
    printf("%s ", what);
    print_quoted(path);
    printf(fmt, val);
}

static void say_errno(const char *what, const char *path) {
    say(what, path, ": %s\n", strerror(errno));
}

/* Go's os.FileMode.String(): type and special letters (or '-'), then rwxrwxrwx. */
static void mode_string(mode_t m, int perm_only, char *out) {
    char *o = out;
    if (!perm_only) {
        if (S_ISDIR(m)) *o++ = 'd';
        if (S_ISLNK(m)) *o++ = 'L';
        if (S_ISBLK(m) || S_ISCHR(m)) *o++ = 'D';
        if (S_ISFIFO(m)) *o++ = 'p';
        if (S_ISSOCK(m)) *o++ = 'S';
        if (m & S_ISUID) *o++ = 'u';
        if (m & S_ISGID) *o++ = 'g';
        if (S_ISCHR(m)) *o++ = 'c';
        if (m & S_ISVTX) *o++ = 't';
    }
    if (o == out) *o++ = '-';
    const char *rwx = "rwxrwxrwx";
    for (int i = 0; i < 9; i++) *o++ = (m & (0400 >> i)) ? rwx[i] : '-';
    *o = '\0';
}

static int read_content(const char *path, int quiet_error) {
    FILE *f = fopen(path, "r");
    if (!f) {
        if (!quiet_error) say_errno("error reading file content for", path);
        return -1;
    }
    static char buf[1 << 16];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int err = ferror(f);
    fclose(f);
    if (err) return -1;
    buf[n] = '\0';
    say("content of file", path, ": %s\n", buf);
    return strcmp(buf, CONTENT) == 0 ? 1 : 0;
}

static int new_file(const char *path, mode_t perm) {
    FILE *f = NULL;
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, perm);
    if (fd >= 0) f = fdopen(fd, "w");
    if (!f || fputs(CONTENT, f) == EOF || fclose(f) != 0) {
        say_errno("error writing new file", path);
        return -1;
    }
    return read_content(path, 0) < 0 ? -1 : 0;
}

static int content_in_loop(const char *path, long seconds, int break_on_expected) {
    time_t start = time(NULL);
    int last = -1;
    while (time(NULL) - start < seconds) {
        last = read_content(path, 1);
        if (last < 0) {
            say("Error reading file", path, ": %s, retrying\n", strerror(errno));
        } else if (!break_on_expected) {
            /* keep printing until the time is up */
        } else if (last == 1) {
            return 0;
        } else {
            printf("Unexpected content. Expected: %s. Retrying\n", CONTENT);
        }
        fflush(stdout);
        sleep(2);
    }
    return last < 0 ? -1 : 0;
}

struct opts {
    const char *fs_type, *file_mode, *file_perm, *file_owner, *file_content, *in_loop;
    const char *new_file[4];
    long retry_time;
    int break_on_expected;
};

static const mode_t NEW_FILE_PERMS[4] = {0644, 0666, 0660, 0777};
static const char *const NEW_FILE_FLAGS[4] = {"new_file_0644", "new_file_0666", "new_file_0660",
                                              "new_file_0777"};

static int set_flag(struct opts *o, const char *name, const char *val) {
    const char **strs[] = {&o->fs_type, &o->file_mode, &o->file_perm, &o->file_owner,
                           &o->file_content, &o->in_loop};
    const char *names[] = {"fs_type", "file_mode", "file_perm", "file_owner", "file_content",
                           "file_content_in_loop"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (strcmp(name, names[i]) == 0) {
            *strs[i] = val;
            return 0;
        }
    }
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, NEW_FILE_FLAGS[i]) == 0) {
            o->new_file[i] = val;
            return 0;
        }
    }
    if (strcmp(name, "retry_time") == 0) {
        char *end;
        o->retry_time = strtol(val, &end, 10);
        return *end ? -1 : 0;
    }
    if (strcmp(name, "break_on_expected_content") == 0) {
        o->break_on_expected = strcmp(val, "false") != 0 && strcmp(val, "0") != 0;
        return 0;
    }
    return -1;
}

static int cmd_mounttest(int argc, char **argv) {
    struct opts o = {.retry_time = 180, .break_on_expected = 1};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strncmp(a, "--", 2) != 0) {
            fprintf(stderr, "mounttest: unexpected argument %s\n", a);
            return 2;
        }
        char name[64];
        const char *eq = strchr(a + 2, '=');
        size_t len = eq ? (size_t)(eq - a - 2) : strlen(a + 2);
        if (len >= sizeof name) return 2;
        memcpy(name, a + 2, len);
        name[len] = '\0';
        const char *val = eq ? eq + 1 : NULL;
        if (!val && strcmp(name, "break_on_expected_content") == 0) val = "true";
        if (!val && i + 1 < argc) val = argv[++i];
        if (!val || set_flag(&o, name, val) != 0) {
            fprintf(stderr, "mounttest: bad flag %s\n", a);
            return 2;
        }
    }
    umask(0);
    int failed = 0;
    struct statfs sfs;
    struct stat st;
    char mode[16];
    if (o.fs_type) {
        if (statfs(o.fs_type, &sfs) != 0) {
            say_errno("error from statfs", o.fs_type);
            failed = 1;
        } else if (sfs.f_type == TMPFS_MAGIC_) {
            say("mount type of", o.fs_type, ": %s\n", "tmpfs");
        } else {
            printf("mount type of ");
            print_quoted(o.fs_type);
            printf(": %ld\n", (long)sfs.f_type);
        }
    }
    for (int i = 0; i < 4; i++) {
        if (o.new_file[i] && new_file(o.new_file[i], NEW_FILE_PERMS[i]) != 0) failed = 1;
    }
    const char *stat_paths[2] = {o.file_mode, o.file_perm};
    const char *stat_what[2] = {"mode of file", "perms of file"};
    for (int i = 0; i < 2; i++) {
        if (!stat_paths[i]) continue;
        if (stat(stat_paths[i], &st) != 0) {
            say_errno("error from Stat", stat_paths[i]);
            failed = 1;
            continue;
        }
        mode_string(st.st_mode, i == 1, mode);
        say(stat_what[i], stat_paths[i], ": %s\n", mode);
    }
    if (o.file_owner) {
        if (stat(o.file_owner, &st) != 0) {
            say_errno("error from stat", o.file_owner);
            failed = 1;
        } else {
            printf("owner UID of ");
            print_quoted(o.file_owner);
            printf(": %u\nowner GID of ", (unsigned)st.st_uid);
            print_quoted(o.file_owner);
            printf(": %u\n", (unsigned)st.st_gid);
        }
    }
    if (o.file_content && read_content(o.file_content, 0) < 0) failed = 1;
    if (o.in_loop && content_in_loop(o.in_loop, o.retry_time, o.break_on_expected) != 0) {
        failed = 1;
    }
    fflush(stdout);
    return failed;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc < 2 || strcmp(argv[1], "pause") == 0) return cmd_pause();
    if (strcmp(argv[1], "mounttest") == 0) return cmd_mounttest(argc - 2, argv + 2);
    fprintf(stderr, "agnhost stand-in: only pause and mounttest are implemented, not %s\n",
            argv[1]);
    return 2;
}
