"""The `edgekit` command. Errors a user can act on are printed as one line, never a traceback."""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import click

from edgekit import __version__
from edgekit.errors import EdgekitError


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """Plan, quantize, measure and package open-weight LLMs for the device you own."""


def _register() -> None:
    from edgekit.cli import bench, cache, formats, models, package, plan, quantize, runtimes, sweep, targets
    from edgekit.cli import eval as eval_

    cli.add_command(bench.bench_cmd)
    cli.add_command(runtimes.runtimes_cmd)
    cli.add_command(eval_.eval_cmd)
    cli.add_command(models.models)
    cli.add_command(quantize.quantize_cmd)
    cli.add_command(formats.formats_cmd)
    cli.add_command(targets.targets)
    cli.add_command(plan.plan_cmd)
    cli.add_command(package.package)
    cli.add_command(cache.cache_cmd)
    cli.add_command(sweep.sweep_cmd)


_register()


def main(argv: list[str] | None = None) -> None:
    # third-party tqdm bars (llm-compressor, compressed-tensors) would interleave with
    # edgekit's own rich progress; tqdm reads this when it is first imported
    os.environ.setdefault("TQDM_DISABLE", "1")
    try:
        rv = cli.main(args=argv, prog_name="edgekit", standalone_mode=False)
    except EdgekitError as e:
        click.echo(f"edgekit: error: {e.one_line()}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("edgekit: interrupted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("edgekit: interrupted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except BrokenPipeError:
        sys.exit(0)
    except OSError as e:
        from edgekit.outputs import from_os_error, is_user_os_error

        if not is_user_os_error(e):
            _internal(e)
        # a full disk, a read-only file system, a path below a file: the machine's, not ours
        click.echo(f"edgekit: error: {from_os_error(e).one_line()}", err=True)
        sys.exit(2)
    except Exception as e:  # a bug of ours: one line, the traceback only on request
        _internal(e)
    sys.exit(rv if isinstance(rv, int) else 0)


def _internal(e: Exception) -> NoReturn:
    if os.environ.get("EDGEKIT_DEBUG"):
        raise e
    click.echo(
        f"edgekit: internal error: {type(e).__name__}: {e} (set EDGEKIT_DEBUG=1 for details)", err=True
    )
    sys.exit(1)


if __name__ == "__main__":
    main()
