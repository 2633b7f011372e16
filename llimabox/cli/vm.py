"""``llima-box vm start|stop|delete|status|provision|logs``: the shared Lima VM."""

from __future__ import annotations

import json
import re
import sys

import click

from llimabox.cli._common import CONTEXT_SETTINGS, Globals, pass_globals

__all__ = ["vm"]


@click.group(context_settings=CONTEXT_SETTINGS)
def vm() -> None:
    """Manage the shared Lima VM (the lima backend).

    \b
    Example:
        llima-box vm start --cpus 8 --memory 16GiB --vm-type vz
    """


SIZE = r"[0-9]+(\.[0-9]+)?\s*([KMGTP]i?B?|B)?"


def _size(_ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(SIZE, value, re.IGNORECASE):
        raise click.BadParameter(f"{value!r} is not a size like 16GiB", param=param)
    return value


@vm.command(context_settings={**CONTEXT_SETTINGS, "ignore_unknown_options": False})
@click.option("--config", "config_file", metavar="FILE", help="Your own lima.yaml (used when the VM is created).")
@click.option("--cpus", type=click.IntRange(1), help="CPUs of the VM (lima.yaml cpus).")
@click.option("--memory", metavar="SIZE", callback=_size, help="Memory of the VM, e.g. 16GiB (lima.yaml memory).")
@click.option("--disk", metavar="SIZE", callback=_size, help="Disk of the VM, e.g. 200GiB (lima.yaml disk).")
@click.option("--vm-type", type=click.Choice(["qemu", "vz"]), help="Lima's VM driver (fixed once created).")
@click.option("--yes", "-y", is_flag=True, help="Restart an existing VM to apply new sizes without asking.")
@click.argument("limactl_args", nargs=-1, metavar="[-- LIMACTL-START-OPTIONS...]")
@pass_globals
def start(
    g: Globals, config_file: str | None, cpus: int | None, memory: str | None, disk: str | None,
    vm_type: str | None, yes: bool, limactl_args: tuple[str, ...],
) -> None:  # fmt: skip
    """Create the VM when it is missing and start it when it is stopped.

    The sizes and --vm-type go into the VM's lima.yaml when it is created, and a new VM gets the
    vm_packages and vm_setup of the configuration. An existing VM takes new sizes when it restarts:
    asked on a terminal, else only with --yes.

    \b
    Examples:
        llima-box vm start --cpus 8 --memory 16GiB --vm-type vz
        llima-box vm start --config ./my-lima.yaml -- --timeout 20m
    """
    from llimabox import vm as manage

    given = {"cpus": cpus, "memory": memory, "disk": disk, "vmType": vm_type}
    settings = {k: v for k, v in given.items() if v is not None}
    overrides = g.api_kwargs()["overrides"]
    vm_ = manage.open_vm(overrides, config_file, limactl_args, settings)
    ask = click.confirm if sys.stdin.isatty() and sys.stdout.isatty() else None
    click.echo(manage.start(vm_, yes=yes, ask=ask, config_given=config_file is not None, overrides=overrides))


@vm.command(context_settings=CONTEXT_SETTINGS)
@click.option("--force", "-f", is_flag=True, help="Stop it even when it is not running cleanly (Broken).")
@pass_globals
def stop(g: Globals, force: bool) -> None:
    """Stop the VM (the envs keep their homes; they start again with the VM)."""
    from llimabox import vm as manage

    click.echo(manage.stop(manage.open_vm(g.api_kwargs()["overrides"]), force=force))


@vm.command(context_settings=CONTEXT_SETTINGS)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@pass_globals
def delete(g: Globals, yes: bool) -> None:
    """Delete the VM with every env in it (projects on the host are not touched)."""
    from llimabox import vm as manage
    from llimabox.cli.envs import _confirm

    vm_ = manage.open_vm(g.api_kwargs()["overrides"])
    _confirm(f"Delete the Lima VM {vm_.name} and every env in it?", yes)
    click.echo(manage.delete(vm_))


@vm.command(context_settings=CONTEXT_SETTINGS)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@pass_globals
def status(g: Globals, as_json: bool) -> int:
    """Show the VM's status (Running, Stopped, Broken or missing); exit 1 unless Running."""
    from llimabox import vm as manage

    info = manage.status(manage.open_vm(g.api_kwargs()["overrides"]))
    if as_json:
        click.echo(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            click.echo(f"{key.replace('_', ' ')}: {'-' if value is None else value}")
    return 0 if info["status"] == "Running" else 1


@vm.command(context_settings=CONTEXT_SETTINGS)
@pass_globals
def provision(g: Globals) -> None:
    """Install or upgrade the guest side in the VM now (it also happens at every boot).

    Also installs the vm_packages of the configuration that are missing (recorded in the VM, and
    installed again at every boot when missing) and runs the vm_setup script as root.

    \b
    Example:
        LLIMA_BOX_VM_PACKAGES=nodejs,npm llima-box vm provision
    """
    from llimabox import vm as manage

    click.echo(manage.provision(g.api_kwargs()["overrides"]))


@vm.command(context_settings=CONTEXT_SETTINGS)
@click.option("--lines", "-n", type=click.IntRange(1), default=50, show_default=True, help="Lines per log.")
@pass_globals
def logs(g: Globals, lines: int) -> None:
    """Show the tail of the VM's Lima logs (host agent, serial console)."""
    from llimabox import vm as manage

    for path, text in manage.logs(manage.open_vm(g.api_kwargs()["overrides"]), lines):
        click.echo(f"==> {path} <==")
        for line in text:
            click.echo(line)
