"""The training command line: its flags, its one-line errors and its exit statuses (`rnn_jax.exitcodes`).

    python -m rnn_jax.train --exp seq                     # the book's run: 500 epochs, perplexity ~1.0
    python -m rnn_jax.train --run-dir RUN --resume        # continue a run from its latest checkpoint

What the flags resolve to is `rnn_jax.launch`; a run from start to end `rnn_jax.runner`; its epochs
`rnn_jax.trainer`, their record and stop rule `rnn_jax.epochs`, the math of one step `rnn_jax.step`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import rnn_jax
from rnn_jax import checkpoint, corpora, distributed, exitcodes, launch, log
from rnn_jax import config as config_lib
from rnn_jax import experiments as experiments_lib
from rnn_jax import flags as flags_lib
from rnn_jax.exitcodes import Exit
from rnn_jax.launch import RunRequest, default_run_dir  # noqa: F401 (API)
from rnn_jax.runner import PREFIXES, check_memory, memory_estimate, run, run_chain  # noqa: F401 (API)
from rnn_jax.trainer import Trainer, predictions  # noqa: F401 (API)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rnn_jax.train", description="Train a character-level RNN language model."
    )
    names = ", ".join([*experiments_lib.EXPERIMENTS, *experiments_lib.CHAINS])
    parser.add_argument("--exp", default=None, help=f"named experiment: {names} (default: seq, or the resumed run's)")
    parser.add_argument("--run-dir", default=None, help="output directory (default: runs/<exp>-<time>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir from its latest complete checkpoint"
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="directory holding the named corpora's files "
        f"({', '.join(c.file for c in corpora.CORPORA.values())}); default: $RNN_JAX_DATA_DIR, else "
        "a verified download into the cache",
    )
    parser.add_argument(
        "--corpus",
        default=None,
        help=f"a corpus name ({', '.join(corpora.CORPORA)}; default: the "
        "experiment's, else timemachine) or the path of a UTF-8 text file",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.add_argument(
        "--tensorboard",
        action="store_true",
        help=f"also write TensorBoard event files to RUN/tensorboard (needs tensorboardX: {log.TENSORBOARD_INSTALL})",
    )
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="RUN",
        help="start from the parameters of the run in "
        "directory RUN (its latest checkpoint), with a fresh optimizer and a new run directory",
    )
    parser.add_argument(
        "--init-from-best",
        action="store_true",
        help="with --init-from: its best checkpoint by validation perplexity instead",
    )
    parser.add_argument(
        "--predict-prefix",
        action="append",
        default=None,
        metavar="TEXT",
        help="prompt of the "
        "greedy predictions printed while training (repeatable; default: the book's 'time traveller'"
        " and 'traveller' for the book, else the text's opening words)",
    )
    add_process_flags(parser)
    flags_lib.add_config_flags(parser)
    return parser


def add_process_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of a multi-process run."""
    group = parser.add_argument_group("multi-process (every process runs the same command)")
    group.add_argument("--coordinator", default=None, help="HOST:PORT of process 0")
    group.add_argument("--num-processes", type=int, default=None)
    group.add_argument("--process-id", type=int, default=None)
    group.add_argument(
        "--init-timeout",
        type=float,
        default=distributed.INIT_TIMEOUT,
        help="seconds to wait for every process to join (default: %(default)s)",
    )


def _check_tensorboard(wanted: bool) -> None:
    """--tensorboard without tensorboardX is refused before anything is read or written."""
    if not wanted:
        return
    try:
        import tensorboardX  # noqa: F401
    except ImportError:
        raise config_lib.ConfigError(
            f"--tensorboard writes with tensorboardX, which is not installed: {log.TENSORBOARD_INSTALL}"
        ) from None


def main(argv=None) -> int:
    rnn_jax.started()
    args = build_parser().parse_args(argv)
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit: a failed write to report, not a core dump
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    return exitcodes.run(
        lambda: _start(launch.Request.from_args(args), args),
        # disk full, a size limit, a read-only file system: what was written before is intact
        notes={Exit.FAILED: "; the files written before are intact"},
        sigint="stopped by SIGINT before the run started; nothing was written",  # before the run's own handler
    )


def _start(req: launch.Request, args: argparse.Namespace) -> None:
    """The chain or the single run a request asks for, once the processes of a multi-process run have joined."""
    _check_tensorboard(req.tensorboard)
    join = lambda: distributed.initialize(
        args.coordinator, args.num_processes, args.process_id, timeout=args.init_timeout
    )
    chain = launch.chain_of(req)
    if chain:
        if req.init_from:
            raise config_lib.ConfigError(f"--exp {chain} starts from its own first stage; drop --init-from")
        join()
        run_chain(chain, req, Path(req.run_dir) if req.run_dir else default_run_dir(chain))
        return
    run_req = launch.resolve(req)
    _check_tensorboard(run_req.tensorboard)  # a resumed run remembers the flag
    join()
    run(run_req)


if __name__ == "__main__":
    code = main()
    if checkpoint.write_failed():  # its error line is out; skip the teardown in which orbax's threads print
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
