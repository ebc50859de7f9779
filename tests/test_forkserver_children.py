"""A served stage ends its DataLoader workers before the fork server's child exits: os._exit
runs no finalizer, and the rehearsal's iteration-based run under torchrun left two workers
blocked on a pipe write for good."""
import multiprocessing
import time

from pipeline import forkserver


def _blocked_writer(conn):
    """What an orphaned prefetching worker does: write into a pipe no one reads."""
    while True:
        conn.send_bytes(b'x' * (1 << 16))


def test_end_children_stops_a_worker_blocked_on_a_full_pipe():
    ctx = multiprocessing.get_context('fork')
    reader, writer = ctx.Pipe(duplex=False)
    worker = ctx.Process(target=_blocked_writer, args=(writer,), daemon=True)
    worker.start()
    time.sleep(0.5)  # its pipe is full by now
    assert worker.is_alive()
    forkserver.end_children()
    assert not worker.is_alive() and worker.exitcode == -15
    assert not multiprocessing.active_children()
    reader.close()
