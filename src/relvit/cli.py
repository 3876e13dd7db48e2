"""What train.py and evaluate.py run inside Hydra: user errors become one line and exit code 2."""
from __future__ import annotations

import functools
import logging
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any, Callable, cast

from hydra import compose
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from relvit.config.checks import check_config
from relvit.errors import ConfigError, ProcessDied, RunFailed, UserError
from relvit.model.task import check_task_overrides
from relvit.runs.distributed import EXIT_PROCESS_DIED, claim_report, stop_started_ranks
from relvit.runs.guards import RunInterrupted
from relvit.runs.saved_config import rebuild, resume_config

log = logging.getLogger("relvit")

#: Exit codes: bad input before work, a run that failed, and 128 + the signal for a stopped run; a run
#: whose other process died exits with distributed.EXIT_PROCESS_DIED (75).
EXIT_USER_ERROR, EXIT_RUN_FAILED = 2, 1
#: Hydra's options that unpickle a file, which can run any code; argparse also takes any prefix of them.
PICKLE_OPTIONS = ("--experimental-rerun",)
_task_started = False
#: The run dir and the parents of it that this process created, deepest first (see WritableRunDir).
_made_dirs: list[Path] = []


def exit_on_user_error(fn: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Report a bad config, missing data, a refused file, a failed or a stopped run as one message,
    not a traceback, with its own exit code."""

    @functools.wraps(fn)
    def wrapped(cfg: DictConfig) -> Any:
        global _task_started
        _task_started = True
        try:
            return fn(cfg)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            if _in_sweep():
                raise  # Hydra records the job as failed and the sweep goes on (SystemExit would end it)
            _remove_empty_run_dir()
            sys.exit(EXIT_USER_ERROR)
        except ProcessDied as err:
            stop_started_ranks()
            if claim_report():  # rank zero's watch of the other ranks may have said it already
                print(f"error: {err}", file=sys.stderr, flush=True)
            if _in_sweep():
                raise
            sys.exit(EXIT_PROCESS_DIED)
        except RunFailed as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            if _in_sweep():
                raise
            sys.exit(EXIT_RUN_FAILED)
        except RunInterrupted as err:
            print(f"{err}", file=sys.stderr, flush=True)
            if err.checkpoint:
                print(f"to resume: {resume_command(getattr(err, 'overrides', None), err.checkpoint)}", file=sys.stderr, flush=True)
            sys.exit(128 + err.signum)

    return wrapped


def resume_command(overrides: list[str] | None, checkpoint: str) -> str:
    """The command line that continues a stopped run from ``checkpoint``."""
    if overrides is None:
        overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    kept = [o for o in overrides if not o.startswith(("resume=", "pretrained=", "finetune=", "paths.output_dir=", "hydra."))]
    return " ".join(["python", Path(sys.argv[0]).name, *map(shlex.quote, kept), shlex.quote(f"resume={checkpoint}")])


class WritableRunDir(Callback):
    """Creates the run's directory before Hydra does, so that an unwritable output location is one
    message and the user-error exit code rather than Hydra's traceback."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        HydraConfig.instance().set_config(config)  # for the ${hydra:...} interpolations of the run dir
        run_dir = Path(str(config.hydra.run.dir))
        _made_dirs[:] = [p for p in (run_dir, *run_dir.parents) if not p.exists()]
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            print(f"error: the run directory {str(run_dir)!r} cannot be created ({err.strerror or err}); "
                  "set paths.log_dir (or RELVIT_OUTPUT_DIR) to a writable directory", file=sys.stderr, flush=True)
            sys.exit(EXIT_USER_ERROR)


def _remove_empty_run_dir() -> None:
    """A run refused before it wrote anything leaves no directory behind: Hydra makes the run dir
    before the config is checked. Only folders this process made, and only while they are empty; the
    run's log file, not yet opened, goes with its folder."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and handler.stream is None and Path(handler.baseFilename).parent in _made_dirs:
            root.removeHandler(handler)
            handler.close()
    for folder in _made_dirs:
        try:
            folder.rmdir()
        except OSError:
            break
    _made_dirs.clear()


def check_override_grammar(args: list[str]) -> None:
    """Refuse, naming it, the first override that Hydra's grammar cannot parse (Hydra's own message
    names no override)."""
    from hydra._internal.utils import get_args_parser
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parsed, _ = get_args_parser().parse_known_args(args)
    parser = OverridesParser.create()
    for override in parsed.overrides:
        try:
            parser.parse_overrides([override])
        except OverrideParseException as err:
            reason = err.message.splitlines()[0]
            raise ConfigError(f"override {override!r} is invalid: {reason}; quote a value that holds = , [ ] ( ) or spaces "
                              "(e.g. 'finetune=[\"task=downstream\"]'), see Hydra's override grammar, "
                              "https://hydra.cc/docs/advanced/override_grammar/basic") from None


def run_main(main: Callable[[], Any]) -> None:
    """Run a ``@hydra.main`` function so that Hydra's own errors about the command line (an unknown
    option of a group, a malformed override) exit with the user-error code, like every other bad input."""
    try:
        refuse_pickle_options(sys.argv[1:])
        check_override_grammar(sys.argv[1:])
        check_task_overrides(sys.argv[1:])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    try:
        main()
    except SystemExit as exit_:
        if exit_.code == 1 and not _task_started:
            sys.exit(EXIT_USER_ERROR)
        raise


def refuse_pickle_options(argv: list[str]) -> None:
    """Raise ConfigError for an option of ``PICKLE_OPTIONS`` (or a prefix argparse would expand to one)."""
    for arg in argv:
        name = arg.split("=", 1)[0]
        option = next((o for o in PICKLE_OPTIONS if len(name) > 2 and o.startswith(name)), None)
        if option is not None:
            raise ConfigError(f"{arg!r} is refused: {option} unpickles a file, which can run any code; "
                              "rerun a job with the overrides in its <run>/.hydra/overrides.yaml instead")


def _in_sweep() -> bool:
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class _NoAdverts(logging.Filter):
    """Drops Lightning's tips that advertise its cloud services."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Tip:" not in str(record.msg)


def log_lightning_once() -> None:
    """``import lightning`` gives its logger a console handler of its own; under Hydra the root
    logger already prints (and writes the run's log file), so every message came out twice."""
    import lightning  # noqa: F401

    # Lightning's own use of a torch API that torch now deprecates; nothing a user can act on
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated")

    if logging.getLogger().handlers:
        logger = logging.getLogger("lightning")
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_NoAdverts())


def train_with_finetune(cfg: DictConfig) -> dict[str, Any]:
    """Run ``cfg``; if it names ``finetune`` overrides, run that second phase from its best checkpoint.

    Both phases are composed and checked (``check_config``, once each) before the first one trains.
    """
    from relvit.training.run import train

    log_lightning_once()
    resumed = bool(cfg.get("resume"))
    if resumed:  # the run goes on with the config saved in its checkpoint: that is the one to check
        cfg = resume_config(cfg, list(HydraConfig.get().overrides.task))
    check_config(cfg)
    if cfg.get("comparison"):  # experiment=relvit_vs_scratch: one seed of the comparison
        from relvit.evaluation.comparison import compare_one_seed

        return compare_one_seed(cfg, train)
    second_overrides = None
    if cfg.get("finetune"):
        overrides = [o for o in HydraConfig.get().overrides.task
                     if not o.startswith(("finetune=", "pretrained=", "resume=", "extend_to_epochs="))]
        overrides += list(cfg.finetune)
        overrides += ["finetune=null", f"paths.output_dir={Path(cfg.paths.output_dir) / 'finetune'}"]
        second_overrides = overrides
        try:
            # pretrained is the first phase's best checkpoint, which does not exist yet
            second_cfg = _second_phase_config(cfg, [*overrides, "pretrained=null"], resumed)
            check_config(second_cfg)
        except ConfigCompositionException as err:
            raise ConfigError(f"finetune={list(cfg.finetune)} is invalid: {err}") from None
        except ConfigError as err:
            raise ConfigError(f"finetune (second phase): {err}") from None
    first = _phase(train, cfg, None)
    best = first.get("best_checkpoint")
    if second_overrides is None or not best:
        return first
    second_overrides = [*second_overrides, f"pretrained={best}"]
    log.info("second phase: %s", " ".join(second_overrides))
    second_cfg = _second_phase_config(cfg, second_overrides, resumed)
    second = _phase(train, second_cfg, second_overrides)
    return {**second, "pretrain": first}


def _second_phase_config(first: DictConfig, overrides: list[str], resumed: bool) -> DictConfig:
    """The second phase's config: composed from the command line, or, when the first phase was
    resumed (its command line no longer names the original choices), the first phase's config with
    the second phase's overrides on top."""
    composed = compose(config_name=HydraConfig.get().job.config_name, overrides=overrides)
    if not resumed:
        return composed
    saved = cast(dict[str, Any], OmegaConf.to_container(first))
    second = rebuild(saved, composed, overrides)
    second.resume = None
    second.extend_to_epochs = None
    return second


def _phase(train: Callable[[DictConfig], dict[str, Any]], cfg: DictConfig, overrides: list[str] | None) -> dict[str, Any]:
    try:
        return train(cfg)
    except RunInterrupted as err:
        err.overrides = overrides  # type: ignore[attr-defined]  # the phase's own command line, for the resume hint
        raise


def report_test_accuracy(summary: dict[str, Any]) -> None:
    from relvit.runs.distributed import is_rank_zero

    test = summary.get("test", {})
    if "test/acc" in test and is_rank_zero():
        print(f"final test accuracy: {test['test/acc']:.4f}  ({summary['output_dir']})", flush=True)
