"""Whether forking supervisors from the agent's own process is safe with grpc loaded.

grpcio's C core (1.85) has fork support on by default: its pthread_atfork
handlers restart about five grpc threads in every forked child, and those abort
the supervisor ("Check failed: wakeup_fd_->Wakeup().ok()") once it closes the
agent's fds. grpc reads the variable when it is imported, so the default set
here only helps when the containerizer is imported first; entry points should
set it. Only the in-process fork path cares: the fork server never imports grpc.
"""

from __future__ import annotations

import os
import sys

ENV = "GRPC_ENABLE_FORK_SUPPORT"
_FALSY = ("0", "false", "no", "off")
_IMPORTED_FORK_SAFE = "grpc" not in sys.modules or os.environ.get(ENV, "1").lower() in _FALSY
os.environ.setdefault(ENV, "0")


def in_process_fork_safe() -> bool:
    """True when grpc was imported (or will be) with its fork support off."""
    return _IMPORTED_FORK_SAFE and os.environ.get(ENV, "").lower() in _FALSY
