"""The seccomp user-notification ABI: ioctl numbers as include/uapi/linux/seccomp.h makes
them, struct sizes as the running kernel reports them (SECCOMP_GET_NOTIF_SIZES), and the
struct formats the answer path decodes with against the ctypes layouts."""

from __future__ import annotations

import ctypes
import os

from procfs.runtime.seccomp import (
    ID,
    NOTIF,
    RESP,
    SECCOMP_IOCTL_NOTIF_ID_VALID,
    SECCOMP_IOCTL_NOTIF_RECV,
    SECCOMP_IOCTL_NOTIF_SEND,
    Notification,
    Response,
    SeccompData,
    SeccompNotif,
    SeccompNotifResp,
    is_listener,
    notif_sizes,
    same_file,
)


def test_ioctl_numbers() -> None:
    # _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct seccomp_notif_resp),
    # _IOW('!', 2, __u64), as <linux/seccomp.h> expands them on x86_64 and arm64
    assert SECCOMP_IOCTL_NOTIF_RECV == 0xC0502100
    assert SECCOMP_IOCTL_NOTIF_SEND == 0xC0182101
    assert SECCOMP_IOCTL_NOTIF_ID_VALID == 0x40082102


def test_sizes_match_the_running_kernel() -> None:
    sizes = notif_sizes()
    assert ctypes.sizeof(SeccompData) == sizes.seccomp_data == 64
    assert ctypes.sizeof(SeccompNotif) == sizes.seccomp_notif == 80
    assert ctypes.sizeof(SeccompNotifResp) == sizes.seccomp_notif_resp == 24


def test_struct_formats_agree_with_the_ctypes_layouts() -> None:
    n = SeccompNotif(id=7, pid=42, flags=0)
    n.data.nr, n.data.arch, n.data.instruction_pointer = 99, 0xC000003E, 0x1234
    n.data.args[:] = [1, 2, 3, 4, 5, 2**64 - 1]
    decoded = Notification._make(NOTIF.unpack(bytes(n)))
    assert decoded == Notification(7, 42, 0, 99, 0xC000003E, 0x1234, 1, 2, 3, 4, 5, 2**64 - 1)
    r = SeccompNotifResp.from_buffer_copy(RESP.pack(9, -1, -14, 1))
    assert (r.id, r.val, r.error, r.flags) == (9, -1, -14, 1)
    assert ID.size == 8


def test_responses() -> None:
    assert Response.failure(5, 14) == Response(5, val=-1, error=-14, flags=0)
    assert Response.failure(5, -14).error == -14
    assert Response.continue_(5).flags == 1 and Response.success(5, 3).val == 3


def test_is_listener_and_same_file() -> None:
    r, w = os.pipe()
    try:
        dup = os.dup(r)
        assert not is_listener(r)
        assert same_file(r, dup) and not same_file(r, w)
        os.close(dup)
    finally:
        os.close(r)
        os.close(w)
    assert not is_listener(12345)  # not open
