"""The ``musicnas`` command. Each subcommand lives in its own module and is imported on first use."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from musicnas import __version__
from musicnas.runtime import MusicnasError, describe_exception, maybe_reexec_with_malloc_tunables
from musicnas.utils.logging import setup_logging

# Set by --debug (or MUSICNAS_DEBUG=1): unexpected errors then show their traceback.
_debug = {"on": False}

# name -> "module:attribute", in the order a user meets them
SUBCOMMANDS: dict[str, str] = {
    "demo": "musicnas.cli.demo:demo",
    "data": "musicnas.cli.data:data",
    "arch": "musicnas.cli.arch:arch",
    "search": "musicnas.cli.search:search",
    "train": "musicnas.cli.train:train",
    "extract": "musicnas.cli.extract:extract",
    "evaluate": "musicnas.cli.evaluate:evaluate",
    "predict": "musicnas.cli.predict:predict",
    "export": "musicnas.cli.export:export",
    "latency": "musicnas.cli.latency:latency",
    "report": "musicnas.cli.report:report",
    "benchmark": "musicnas.cli.benchmark:benchmark",
}


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it is run or listed."""

    def list_commands(self, ctx):
        return [name for name in SUBCOMMANDS if self._load(name) is not None]

    def get_command(self, ctx, name):
        return self._load(name)

    @staticmethod
    def _load(name):
        target = SUBCOMMANDS.get(name)
        if target is None:
            return None
        module_name, attr = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:  # subcommand not built yet
                return None
            raise
        return getattr(module, attr)


@click.group(
    cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100}
)
@click.version_option(__version__, prog_name="musicnas")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option(
    "--debug",
    is_flag=True,
    help="Show the Python traceback of an unexpected error (put it before the subcommand).",
)
def cli(verbose: int, quiet: bool, debug: bool) -> None:
    """musicnas: find, train and ship neural networks for music audio classification with ENAS.

    \b
    Typical flow:
      musicnas data synth --out demo_audio          # or bring a folder with one subfolder per class
      musicnas data prepare --data demo_audio --cache .musicnas-cache
      musicnas search --data demo_audio --space macro --out runs/search
      musicnas train --arch runs/search/arch.json --data demo_audio --out runs/model
      musicnas evaluate --model runs/model --data demo_audio
      musicnas predict --model runs/model song.mp3
    Or run everything on generated demo music: musicnas demo
    """
    _debug["on"] = debug or _debug["on"]
    setup_logging(-1 if quiet else verbose)


def main(argv: list[str] | None = None) -> None:
    """The console entry point: every error ends in one message and an exit status, never a traceback
    (unless ``--debug`` asked for one)."""
    maybe_reexec_with_malloc_tunables(argv)
    _debug["on"] = os.environ.get("MUSICNAS_DEBUG", "") not in ("", "0")
    try:
        cli.main(args=argv, prog_name="musicnas", standalone_mode=False)
    except MusicnasError as exc:
        _fail(f"error: {exc}", 2)
    except (click.exceptions.Abort, KeyboardInterrupt):
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except MemoryError:
        _fail(
            "error: out of memory; use smaller settings (batch size, channels, clip length) or a larger machine",
            2,
        )
    except OSError as exc:
        _fail(f"error: {_os_error_text(exc)}", 2)
    except Exception as exc:  # a bug: say so plainly; --debug shows where
        _fail(
            f"error: unexpected internal error ({describe_exception(exc, 300)}). This is a bug in musicnas; "
            "run the command again with `musicnas --debug ...` for the traceback and report it",
            1,
        )
    finally:
        from musicnas import distributed

        distributed.shutdown()  # leave a torchrun process group cleanly (no-op otherwise)


def _os_error_text(exc: OSError) -> str:
    """An OS error that reached the top (a file the command could not read or write) in one line."""
    from musicnas.utils.io import disk_full_error, is_disk_full

    if is_disk_full(exc) and exc.filename:
        return str(disk_full_error(exc, exc.filename))
    where = f" {exc.filename}" if exc.filename else ""
    return f"cannot access{where}: {exc.strerror or describe_exception(exc)}"


def _fail(message: str, code: int) -> None:
    if _debug["on"]:
        traceback.print_exc()
    click.secho(message, fg="red", err=True)
    sys.exit(code)
