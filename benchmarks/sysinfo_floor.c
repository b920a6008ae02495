/* The floor for a sysinfo(2) answered in user space: the same round trip as procfs's (poll,
 * SECCOMP_IOCTL_NOTIF_RECV, process_vm_writev, NOTIF_ID_VALID, NOTIF_SEND), in C, one listener.
 *
 *   sysinfo_floor answer|continue PROGRAM ARGS...
 *
 * Forks; the child installs a filter notifying sysinfo, hands the listener to the parent and
 * executes PROGRAM; the parent answers every notification (with a fixed struct, or with
 * SECCOMP_USER_NOTIF_FLAG_CONTINUE) until the child's filter has no task left.
 */
#define _GNU_SOURCE
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static int pass_fd(int sock, int fd) {
    char c = 0, buf[CMSG_SPACE(sizeof fd)];
    struct iovec io = {&c, 1};
    struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = buf,
                       .msg_controllen = sizeof buf};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof fd);
    memcpy(CMSG_DATA(cm), &fd, sizeof fd);
    return sendmsg(sock, &m, 0) == 1 ? 0 : -1;
}

static int take_fd(int sock) {
    char c, buf[CMSG_SPACE(sizeof(int))];
    struct iovec io = {&c, 1};
    struct msghdr m = {.msg_iov = &io, .msg_iovlen = 1, .msg_control = buf,
                       .msg_controllen = sizeof buf};
    int fd = -1;
    if (recvmsg(sock, &m, 0) == 1 && CMSG_FIRSTHDR(&m))
        memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&m)), sizeof fd);
    return fd;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: sysinfo_floor answer|continue PROGRAM ARGS...\n");
        return 2;
    }
    int answer = strcmp(argv[1], "answer") == 0;
    struct sock_filter insns[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_sysinfo, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {sizeof insns / sizeof insns[0], insns};
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
        return 2;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        int fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                         &prog);
        if (fd < 0 || pass_fd(sv[1], fd) != 0)
            _exit(2);
        close(fd);
        execvp(argv[2], argv + 2);
        _exit(127);
    }
    int fd = take_fd(sv[0]);
    if (fd < 0)
        return 2;
    struct sysinfo si = {.uptime = 100, .totalram = 256 << 20, .freeram = 128 << 20,
                         .procs = 5, .mem_unit = 1};
    struct seccomp_notif req;
    struct seccomp_notif_resp resp;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, -1) < 0 || !(p.revents & POLLIN))
            break; /* POLLHUP: no task left */
        memset(&req, 0, sizeof req);
        if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &req) != 0)
            continue;
        memset(&resp, 0, sizeof resp);
        resp.id = req.id;
        if (answer) {
            struct iovec local = {&si, sizeof si}, remote = {(void *)req.data.args[0], sizeof si};
            process_vm_writev(req.pid, &local, 1, &remote, 1, 0);
            if (ioctl(fd, SECCOMP_IOCTL_NOTIF_ID_VALID, &req.id) != 0)
                continue;
        } else {
            resp.flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
        }
        ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp);
    }
    int status;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
