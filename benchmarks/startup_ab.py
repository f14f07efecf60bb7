r"""Process start-up (`import jax`, a launcher's errors), A/B by folder.

  pip install --no-deps --target <folder> ml_dtypes==0.7.0
  python -m benchmarks.startup_ab --variant=installed= \
      --variant=ml_dtypes-0.7.0=<folder>                # 5 rounds
  git worktree add /tmp/base <commit>
  python -m benchmarks.startup_ab --variant=base=/tmp/base --variant=this=

Every launcher, test worker and child process a test starts pays Python's
imports before it does anything; `make test` starts about fifty. A variant
is ``label=folder``: the folder goes first on ``PYTHONPATH`` (empty: the
installed packages), so another version of one package, installed with
``pip install --no-deps --target <folder> <package>==<version>``, is
measured against the installed one without touching the virtual
environment; a folder holding ``experiments/`` is another checkout of the
project (a git worktree of another commit), and the commands run in it.
Each round runs, per variant in a rotated order, fresh processes timing
(1) ``import jax`` (wall of the whole interpreter), (2) ``python -m
experiments.train --nope=1`` (a launcher's start-up up to its one-line
flag error) and (3) the same launcher up to its one-line error for a
misspelt ``--config.<key>`` (its config file parsed). Prints each
measurement, then the medians.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import subprocess
import sys
import time

from benchmarks import compile_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
# name: (command, its exit status, a text its stderr holds): a run that ends
# otherwise (an import error in the other folder ...) stops the benchmark.
COMMANDS = {
    "import_jax": ([sys.executable, "-c", "import jax"], 0, ""),
    "launcher_error": ([sys.executable, "-m", "experiments.train",
                        "--nope=1"], 1, "Unknown command line flag 'nope'"),
    "config_error": ([sys.executable, "-m", "experiments.train",
                      "--workdir=/nonexistent/startup_ab",
                      "--config=experiments/configs/flip_pretrain.py:"
                      "dataset=synthetic", "--config.nope=1"], 1,
                     "--config.nope: no field 'nope'"),
}


def folder_first_env(*folders: str) -> dict[str, str]:
  """This process's environment on CPU with ``folders`` (empty ones
  skipped) first on PYTHONPATH, in order."""
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (*folders, env.get("PYTHONPATH", "")) if p)
  return env


def variant_folders(parser: argparse.ArgumentParser, variants: list[str],
                    *, empty_ok: bool = True, holds: str = ""
                    ) -> dict[str, str]:
  """``label=folder`` flags -> {label: folder}; a parser error names a
  variant without ``=``, an empty folder (unless ``empty_ok``: the
  installed packages) or a folder that is missing or lacks ``holds``."""
  folders = {}
  for v in variants:
    label, sep, folder = v.partition("=")
    if not sep or not (folder or empty_ok):
      parser.error(f"--variant={v}: want label=folder"
                   + (" ('label=' for the installed packages)"
                      if empty_ok else ""))
    if folder and not os.path.isdir(os.path.join(folder, holds)):
      parser.error(f"--variant={v}: no such folder"
                   + (f" holding {holds}/" if holds else ""))
    folders[label] = os.path.abspath(folder) if folder else ""
  return folders


def run_once(folder: str) -> dict[str, float]:
  """Seconds of each command in a fresh process with ``folder`` first on
  PYTHONPATH ('' = the installed packages), run in ``folder`` when it is a
  checkout (``python -m`` puts the working folder before PYTHONPATH)."""
  env = folder_first_env(folder, str(REPO))
  checkout = folder and os.path.isdir(os.path.join(folder, "experiments"))
  out = {}
  for name, (cmd, status, says) in COMMANDS.items():
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=folder if checkout else REPO, env=env,
                          capture_output=True, text=True, check=False)
    out[name] = time.perf_counter() - start
    if proc.returncode != status or says not in proc.stderr:
      raise RuntimeError(f"{cmd} did not end as expected (exit "
                         f"{proc.returncode}):\n{proc.stderr[-2000:]}")
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rounds", type=int, default=5)
  parser.add_argument("--variant", action="append", required=True,
                      help="label=folder ('label=' for the installed "
                           "packages); repeat")
  args = parser.parse_args()
  folders = variant_folders(parser, args.variant)
  times = compile_flags.interleaved(
      list(folders), args.rounds, lambda label: run_once(folders[label]))
  compile_flags.print_medians(f"medians over {args.rounds} rounds:", times,
                              digits=3)


if __name__ == "__main__":
  main()
