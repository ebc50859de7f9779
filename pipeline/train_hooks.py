"""Hooks the train stage adds to every run: what a long, resumable, unattended job needs.

- RNGStateHook: mmengine restores weights, optimizer, schedulers and the sampler's epoch seed on
  resume, but not the Python, NumPy and torch generators, which drive flips, scale choice and
  the RoI samplers; without them a resumed run is a different run.
- DataCheckHook: the training set as the loader sees it must hold images that exist and the
  classes the model predicts; otherwise training would fail deep inside a worker, or worse,
  train on the wrong label space.
- FiniteLossHook: a NaN or infinite loss term stops training at once, naming run, seed,
  iteration and term; the checkpoints written before it stay, no final weights are published.
- StopOnSigtermHook: SIGTERM (a scheduler's time limit, scancel) stops at the next iteration
  boundary rather than mid-checkpoint; the rerun resumes from the last checkpoint, if one was
  written.
- IndicatorTraceHook: LOCE's indicator (the mean score) through fine-tuning, for the trajectory
  figure: where it starts (after the warm-up), how it moves, where it ends.
- ProgressHook and QuietRunner: a progress line on the console every half minute, with warnings
  and errors; mmengine's INFO log (environment, config, every logged iteration: a thousand
  lines a run) goes to its log file alone, unless `train --verbose`.
"""
import logging
import math
import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import IterBasedTrainLoop, Runner

from pipeline.train import checkpoints

SIGTERM_EXIT = 143  # 128 + SIGTERM, what a shell reports for a job ended by SIGTERM


def _set_random_state(state: dict) -> None:
    random.setstate(state['python'])
    np.random.set_state(state['numpy'])
    torch.set_rng_state(state['torch'])
    if state['cuda'] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


class _StateAfterSkip:
    """The train loop's data iterator, restoring the random state once the loop has skipped
    the batches trained before the checkpoint: an iteration-based loop replays them on resume
    (mmengine's IterBasedTrainLoop), and their augmentations would draw from the restored
    generators and move them past where the uninterrupted run was."""

    def __init__(self, iterator, skip: int, state: dict):
        self.iterator, self.skip, self.state = iterator, skip, state

    def __iter__(self):
        return self

    def __next__(self):
        if self.skip == 0 and self.state is not None:
            _set_random_state(self.state)
            self.state = None
        self.skip -= 1
        return next(self.iterator)


@HOOKS.register_module()
class RNGStateHook(Hook):
    priority = 'VERY_LOW'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['rng_state'] = dict(python=random.getstate(), numpy=np.random.get_state(),
                                       torch=torch.get_rng_state(),
                                       cuda=torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('rng_state')
        if state is None or not runner._resume:
            return
        loop = runner.train_loop
        done = checkpoint.get('meta', {}).get('iter', 0)
        if isinstance(loop, IterBasedTrainLoop) and done > 0:
            loop.dataloader_iterator = _StateAfterSkip(loop.dataloader_iterator, done, state)
        else:
            _set_random_state(state)


def _base_dataset(dataset):
    """The dataset inside mmengine's wrappers (ClassBalancedDataset, RepeatDataset)."""
    while hasattr(dataset, 'dataset'):
        dataset = dataset.dataset
    return dataset


def _num_classes(model) -> int | None:
    head = getattr(getattr(model, 'roi_head', None), 'bbox_head', None)
    return getattr(head, 'num_classes', None)


def check_dataset(dataset, model, where: str, scale: str) -> None:
    """A non-empty dataset, every listed image on disk, and as many classes in the annotations
    as the model predicts; else a message naming the annotation file and the fix."""
    base = _base_dataset(dataset)
    ann_file = getattr(base, 'ann_file', '?')
    if len(dataset) == 0:
        raise SystemExit(f'{ann_file}: {where} is empty after filtering '
                         f'(filter_cfg={base.filter_cfg}); check the annotation file and filter_cfg')
    classes = base.metainfo.get('classes', ())
    expected = _num_classes(model)
    if expected is not None and len(classes) != expected:
        raise SystemExit(f'{ann_file}: {len(classes)} categories, but the model predicts '
                         f'num_classes={expected}; set model.roi_head.bbox_head.num_classes '
                         '(and mask_head) to the annotation file\'s category count')
    missing = [info['img_path'] for info in (base.get_data_info(i) for i in range(len(base)))
               if not os.path.isfile(info['img_path'])]
    if missing:
        raise SystemExit(f'{ann_file}: {len(missing)} listed images are missing on disk '
                         f'(first: {missing[0]}); rerun the data stage (`python -m pipeline '
                         f'data --scale {scale}`) or fix data_prefix')


def _model(runner):
    return runner.model.module if hasattr(runner.model, 'module') else runner.model


@HOOKS.register_module()
class DataCheckHook(Hook):
    """check_dataset on the training set before the first iteration, and on the test set
    before testing."""

    priority = 'VERY_HIGH'

    def __init__(self, scale: str):
        self.scale = scale

    def before_train(self, runner) -> None:
        check_dataset(runner.train_dataloader.dataset, _model(runner), 'the training set',
                      self.scale)

    def before_test(self, runner) -> None:
        check_dataset(runner.test_dataloader.dataset, _model(runner), 'the test set', self.scale)


@HOOKS.register_module()
class FiniteLossHook(Hook):
    priority = 'VERY_HIGH'

    def __init__(self, run: str = '?', seed: int = -1):
        self.run, self.seed = run, seed

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        for name, value in (outputs or {}).items():
            if 'loss' not in name:
                continue
            value = float(value.detach().mean()) if torch.is_tensor(value) else float(value)
            if not math.isfinite(value):
                raise SystemExit(
                    f'run {self.run!r} seed {self.seed}: loss term {name} is {value} at '
                    f'iteration {runner.iter + 1}; training stopped, its last epoch checkpoint is '
                    'kept and nothing is published. Lower the learning rate or check the data')


@HOOKS.register_module()
class StopOnSigtermHook(Hook):
    priority = 'VERY_HIGH'

    def __init__(self):
        self._asked = False

    def _ask(self, signum, frame) -> None:
        self._asked = True

    def before_run(self, runner) -> None:
        signal.signal(signal.SIGTERM, self._ask)

    def _stop_if_asked(self, runner) -> None:
        if self._asked:
            found = checkpoints(Path(runner.work_dir))
            then = (f'a rerun resumes from {found[-1].name}' if found else
                    'no checkpoint written yet; a rerun starts from the beginning')
            # a warning, so that the console shows it (QuietRunner)
            runner.logger.warning(f'SIGTERM: stopping at iteration {runner.iter}; {then}')
            raise SystemExit(SIGTERM_EXIT)

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self._stop_if_asked(runner)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self._stop_if_asked(runner)

    def after_run(self, runner) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@HOOKS.register_module()
class IndicatorTraceHook(Hook):
    """The indicator's C+1 scores before the first iteration (after the warm-up), after every
    `interval` iterations (default: 1/50 of the run) and after the last, kept in the checkpoints
    (so a resumed run has the trace an uninterrupted one has) and written to
    <work_dir>/indicator_trace.json at the end."""

    priority = 'LOW'  # after MemoryWarmupHook (NORMAL) in before_train

    def __init__(self, interval: int | None = None):
        self.interval = interval
        self.trace = dict(iterations=[], scores=[])

    def _record(self, runner, iteration: int) -> None:
        if self.trace['iterations'][-1:] == [iteration]:
            return
        scores = _model(runner).roi_head.indicator.scores
        self.trace['iterations'].append(iteration)
        self.trace['scores'].append([round(float(v), 6) for v in scores])

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if runner._resume and 'indicator_trace' in checkpoint:
            self.trace = checkpoint['indicator_trace']

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        checkpoint['indicator_trace'] = self.trace

    def before_train(self, runner) -> None:
        self.interval = self.interval or max(1, runner.max_iters // 50)
        self._record(runner, runner.iter)

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if (runner.iter + 1) % self.interval == 0:  # runner.iter counts the finished one after
            self._record(runner, runner.iter + 1)

    def after_train(self, runner) -> None:
        self._record(runner, runner.iter)
        if runner.rank == 0:
            from pipeline import atomic
            atomic.write_json(os.path.join(runner.work_dir, 'indicator_trace.json'), self.trace)


class QuietRunner(Runner):
    """mmengine's Runner with a console that shows warnings and errors only: its INFO lines go
    to the log file alone, and ProgressHook says how far training is."""

    def build_logger(self, *args, **kwargs):
        logger = super().build_logger(*args, **kwargs)
        for handler in logger.handlers:
            if not isinstance(handler, logging.FileHandler):  # the console
                handler.setLevel(max(handler.level, logging.WARNING))
        return logger


# mmengine 0.10.7's own CheckpointHook makes a FileClient, mmengine's deprecated API, at every
# start and save, whatever the config; its two notices name nothing a user could change.
MMENGINE_NOTICES = frozenset((
    '"FileClient" will be deprecated in future. Please use io functions in '
    'https://mmengine.readthedocs.io/en/latest/api/fileio.html#file-io',
    '"HardDiskBackend" is the alias of "LocalBackend" and the former will be deprecated in '
    'future.'))


def not_an_mmengine_notice(record: logging.LogRecord) -> bool:
    return record.getMessage() not in MMENGINE_NOTICES


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f'{hours}h{minutes:02d}m'
    return f'{minutes}m{seconds:02d}s' if minutes else f'{seconds}s'


@HOOKS.register_module()
class ProgressHook(Hook):
    """One console line after the first iteration, every `every_s` seconds and after the last:
    the iteration, the loss averaged since the previous line and the time left at the pace so
    far (mmengine's log file has every loss term)."""

    priority = 'LOW'

    def __init__(self, name: str = '', every_s: float = 30.0):
        self.name, self.every_s = name, every_s

    def before_train(self, runner) -> None:
        self.start, self.start_iter = time.perf_counter(), runner.iter
        self.printed, self.losses = -math.inf, []

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.rank != 0:
            return
        if outputs and 'loss' in outputs:
            self.losses.append(float(torch.as_tensor(outputs['loss']).detach()))
        done, total, now = runner.iter + 1, runner.max_iters, time.perf_counter()
        if now - self.printed < self.every_s and done < total:
            return
        left = (total - done) * (now - self.start) / (done - self.start_iter)
        loss = f'{sum(self.losses) / len(self.losses):.3f}' if self.losses else '?'
        print(f'[train] {self.name}: iter {done}/{total} ({100 * done // total}%), loss {loss}, '
              f'ETA {_duration(left)}', flush=True)
        self.printed, self.losses = now, []
