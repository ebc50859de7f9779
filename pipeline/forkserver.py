"""A fork server for the stages of one CPU scale: import torch, mmengine, mmdet and loce once,
then fork a child per `python -m pipeline STAGE ...` call.

Why: every stage process otherwise spends seconds importing the same libraries before its
first line of work (measured: `import loce` takes 5-8 s here, 20 s on a loaded machine), and
the smoke DAG runs dozens of short stages. The children run exactly the code a fresh process
runs, with the kernel path and thread count pinned before torch was imported (the server
refuses a call whose pin differs, and the caller then runs in-process), so numbers are the same.

    python -m pipeline.forkserver --scale smoke -- snakemake ...  # serve while it runs
    python -m pipeline.forkserver --scale smoke --socket PATH      # serve until SIGTERM
    LOCE_FORKSERVER=PATH python -m pipeline train ...              # the CLI hands calls over

A call sends its argument list, working directory, environment and its stdin/stdout/stderr
(passed as file descriptors, so a stage's output lands in the caller's log); the child sends its
exit status back. SIGTERM/SIGINT to the caller are forwarded to the child; if the caller dies
(SIGKILL), the child kills itself, so nothing outlives the job that started it.
"""
from __future__ import annotations

import argparse
import array
import json
import os
import signal
import socket
import struct
import sys
import threading

from . import matrix as mx

ENV = 'LOCE_FORKSERVER'
_HEADER = struct.Struct('!I')


def _send(sock: socket.socket, obj, fds=()) -> None:
    data = json.dumps(obj).encode()
    payload = _HEADER.pack(len(data)) + data
    if fds:
        sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fds))])
    else:
        sock.sendall(payload)


def _recv(sock: socket.socket, with_fds=0):
    """One message (and up to `with_fds` file descriptors), or None at EOF."""
    fds = array.array('i')
    head, ancdata, _, _ = sock.recvmsg(_HEADER.size, socket.CMSG_LEN(with_fds * fds.itemsize))
    if not head:
        return None, []
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[:len(data) - len(data) % fds.itemsize])
    size, body = _HEADER.unpack(head)[0], b''
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            return None, list(fds)
        body += chunk
    return json.loads(body), list(fds)


def _child(conn: socket.socket, call: dict, fds: list[int], pin: dict) -> None:
    """In the forked child: become the caller's stage process, run the stage, report."""
    _send(conn, dict(pid=os.getpid()))
    for target, fd in enumerate(fds[:3]):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(call['cwd'])
    os.environ.clear()
    os.environ.update(call['env'])
    os.environ.update(pin)  # what torch was started with (the caller's pin is the same)
    sys.argv = ['python -m pipeline', *call['argv']]

    def watch():  # the caller forwards signals as one byte; EOF means it died
        while True:
            data = conn.recv(1)
            if not data:
                os.kill(os.getpid(), signal.SIGKILL)
            os.kill(os.getpid(), int(data[0]))
    threading.Thread(target=watch, daemon=True).start()
    from .cli import main
    try:
        code = main(call['argv'])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if not isinstance(stop.code, int) and stop.code is not None:
            print(stop.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001  (the caller must get a status whatever happened)
        import traceback
        traceback.print_exc()
        code = 1
    end_children()
    sys.stdout.flush()
    sys.stderr.flush()
    _send(conn, dict(exit=code))
    os._exit(code)


def end_children(timeout_s: float = 5.0) -> None:
    """Stop the stage's multiprocessing children (DataLoader workers). os._exit skips the
    finalizers that would: an iteration-based loop's persistent workers, blocked writing
    prefetched batches into a pipe no one reads, outlived the stage (two of 840 MB each after the
    rehearsal's BALMS run under torchrun)."""
    import multiprocessing
    children = multiprocessing.active_children()
    for child in children:
        child.terminate()
    for child in children:
        child.join(timeout_s)


def serve(socket_path: str, scale: str) -> None:
    from . import determinism
    spec = mx.scale(mx.load(), scale)
    if spec['gpus'] != 0:
        raise SystemExit(f'the fork server is for CPU scales; {scale} runs on GPUs')
    determinism.apply(spec, scale_name=scale)
    pin = determinism.pinned_env(spec)
    # What the stages import, once: every child starts with it in memory.
    import mmengine.runner  # noqa: F401
    import loce  # noqa: F401
    from . import analyse, evaluate, train  # noqa: F401

    signal.signal(signal.SIGCHLD, lambda *_: _reap())
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    if os.path.exists(socket_path):
        os.unlink(socket_path)
    server.bind(socket_path)
    server.listen(16)

    def stop(signum, frame):
        server.close()
        os.unlink(socket_path)
        os._exit(0)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f'[forkserver] serving {scale} stages on {socket_path} (pid {os.getpid()})', flush=True)
    while True:
        try:
            conn, _ = server.accept()
        except InterruptedError:
            continue
        call, fds = _recv(conn, with_fds=3)
        if call is None:
            conn.close()
            continue
        if call['root'] != str(mx.ROOT) or call['pin'] != pin:
            _send(conn, dict(refused=f'server of {mx.ROOT} with pin {pin}'))
            conn.close()
            for fd in fds:
                os.close(fd)
            continue
        if os.fork() == 0:
            server.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: main()'s line
            _child(conn, call, fds, pin)
        conn.close()
        for fd in fds:
            os.close(fd)


def _reap() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass


def call(argv: list[str], pin: dict) -> int | None:
    """Run `python -m pipeline argv` in the server named by $LOCE_FORKSERVER; its exit status,
    or None when there is no usable server (the caller then runs the stage itself)."""
    path = os.environ.get(ENV)
    if not path:
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError:
        return None
    _send(sock, dict(argv=argv, cwd=os.getcwd(), env=dict(os.environ), root=str(mx.ROOT),
                     pin=pin), fds=[0, 1, 2])
    answer, _ = _recv(sock)
    if answer is None or 'refused' in answer:
        return None
    forward = lambda signum, frame: sock.send(bytes([signum]))  # noqa: E731
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    result, _ = _recv(sock)
    if result is None:
        print(f'[forkserver] the stage process {answer["pid"]} ended without a status',
              file=sys.stderr)
        return 1
    return result['exit']


def run_with_server(scale: str, command: list[str]) -> int:
    """Serve `scale` in a child process while `command` runs with LOCE_FORKSERVER set."""
    import subprocess
    import tempfile
    import time

    path = os.path.join(tempfile.mkdtemp(prefix='loce-forkserver-'), 'socket')
    server = subprocess.Popen([sys.executable, '-m', 'pipeline.forkserver', '--scale', scale,
                               '--socket', path], cwd=mx.ROOT)
    try:
        while not os.path.exists(path):
            if server.poll() is not None:
                raise SystemExit(f'[forkserver] did not start (exit {server.returncode})')
            time.sleep(0.2)
        return subprocess.call(command, env=dict(os.environ, **{ENV: path}))
    finally:
        server.terminate()
        server.wait()


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    own, command = (argv[:argv.index('--')], argv[argv.index('--') + 1:]) if '--' in argv \
        else (argv, [])
    p = argparse.ArgumentParser(prog='python -m pipeline.forkserver', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--scale', required=True)
    p.add_argument('--socket', help='serve on this socket until SIGTERM')
    args = p.parse_args(own)
    if command:
        return run_with_server(args.scale, command)
    if not args.socket:
        p.error('give --socket PATH to serve, or -- COMMAND ... to run a command with a server')
    serve(args.socket, args.scale)
    return 0


if __name__ == '__main__':
    sys.exit(main())
