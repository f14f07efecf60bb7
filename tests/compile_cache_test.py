"""JAX's persistent compilation cache (flip_jax.compile_cache): where the
folder comes from, `off`, and a second process loading what a first one
compiled through the launchers' set-up (`experiments.launch`)."""
import json
import os
import subprocess
import sys

import jax
import pytest
from absl import flags
from absl.testing import flagsaver

from experiments import launch
from flip_jax import compile_cache
from tests.helpers import env as env_lib  # pylint: disable=g-bad-import-order

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def session_cache_back(monkeypatch):
  """Lets a test set the cache up as on a safe backend, then puts this
  process back as conftest left it."""
  monkeypatch.setitem(compile_cache._state, "unsafe", None)  # pylint: disable=protected-access
  yield
  monkeypatch.undo()
  compile_cache.setup(os.environ[compile_cache.ENV])
  compile_cache.check_backend()


def test_default_folder_is_per_user():
  home = os.path.expanduser("~")
  assert compile_cache.resolve(None, {}) == os.path.join(
      home, ".cache", "flip_jax", "jax_compile")
  assert compile_cache.resolve(None, {"XDG_CACHE_HOME": "/x/cache"}) == (
      "/x/cache/flip_jax/jax_compile")


def test_flag_then_env_then_jax_env(tmp_path):
  env = {compile_cache.ENV: str(tmp_path / "env"),
         compile_cache.JAX_ENV: str(tmp_path / "jax")}
  assert compile_cache.resolve(str(tmp_path / "flag"), env) == str(
      tmp_path / "flag")
  assert compile_cache.resolve(None, env) == str(tmp_path / "env")
  assert compile_cache.resolve("", env) == str(tmp_path / "env")
  del env[compile_cache.ENV]
  assert compile_cache.resolve(None, env) == str(tmp_path / "jax")


@pytest.mark.parametrize("value", ["off", "OFF", " none ", "false", "0"])
def test_off_from_the_flag_or_the_env(value, tmp_path):
  assert compile_cache.resolve(value, {}) is None
  assert compile_cache.resolve(None, {compile_cache.ENV: value}) is None
  # The flag wins over the environment both ways.
  assert compile_cache.resolve(str(tmp_path), {compile_cache.ENV: value}) == (
      str(tmp_path))
  assert compile_cache.resolve(value, {compile_cache.ENV: str(tmp_path)}) is (
      None)


def test_relative_and_home_folders_are_made_absolute(monkeypatch, tmp_path):
  monkeypatch.chdir(tmp_path)
  assert compile_cache.resolve("c", {}) == str(tmp_path / "c")
  assert compile_cache.resolve("~/c", {}) == os.path.join(
      os.path.expanduser("~"), "c")


def _launch_setup(value):
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  with flagsaver.flagsaver(compile_cache=value):
    return launch.setup_compile_cache()


def test_flag_sets_jax_config(tmp_path, session_cache_back):
  folder = str(tmp_path / "jit")
  assert _launch_setup(folder) == folder
  assert os.path.isdir(folder)
  assert jax.config.jax_enable_compilation_cache
  assert jax.config.jax_compilation_cache_dir == folder
  # Small CPU programs are cached too.
  assert jax.config.jax_persistent_cache_min_compile_time_secs == 0
  assert jax.config.jax_persistent_cache_min_entry_size_bytes == -1


def test_off_turns_the_cache_off(session_cache_back):
  assert _launch_setup("off") is None
  assert not jax.config.jax_enable_compilation_cache


def test_no_flag_takes_the_env(session_cache_back, monkeypatch, tmp_path):
  monkeypatch.setenv(compile_cache.ENV, str(tmp_path / "from_env"))
  assert _launch_setup(None) == str(tmp_path / "from_env")


def test_unwritable_folder_turns_it_off(tmp_path, session_cache_back):
  (tmp_path / "file").write_text("not a folder")
  assert compile_cache.setup(str(tmp_path / "file" / "jit")) is None
  assert not jax.config.jax_enable_compilation_cache


# A launcher in miniature: run_main parses --compile_cache, init_runtime
# sets the cache up, then one program is compiled (or loaded).
_PROGRAM = """
import json
from experiments import launch
from flip_jax import compile_cache

def main(argv):
  launch.init_runtime()
  import jax, jax.numpy as jnp
  f = jax.jit(lambda x: jnp.tanh(x @ x.T).sum())
  f(jnp.ones((16, 16))).block_until_ready()
  print(json.dumps(compile_cache.stats()))

launch.run_main(main)
"""


def _run_program(*args, devices=1, program=_PROGRAM):
  env = env_lib.child_env(devices)
  proc = subprocess.run([sys.executable, "-c", program, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=300,
                        check=False, env=env)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def _entries(folder):
  return sorted(n for n in os.listdir(folder) if n.endswith("-cache"))


def test_second_process_loads_what_the_first_compiled(tmp_path):
  folder = tmp_path / "jit"
  first, log = _run_program(f"--compile_cache={folder}")
  assert first["requests"] > 0 and first["hits"] == 0, first
  assert first["writes"] == first["requests"], first
  written = _entries(folder)
  assert len(written) == first["writes"]
  # The folder is logged once (run_main and init_runtime both set it up).
  assert log.count(f"compile cache: {folder} ") == 1, log[-3000:]
  assert f"compile cache: 0 of {first['requests']} programs loaded" in log

  second, log = _run_program(f"--compile_cache={folder}")
  assert second["hits"] == second["requests"] == first["requests"], second
  assert second["writes"] == 0 and _entries(folder) == written
  assert f"compile cache: {second['hits']} of {second['hits']}" in log

  off, _ = _run_program("--compile_cache=off")
  assert off == {"requests": 0, "hits": 0, "writes": 0, "saved_s": 0.0}


def test_unsafe_only_on_several_cpu_devices():
  assert compile_cache.unsafe_reason("cpu", 1) is None
  assert compile_cache.unsafe_reason("gpu", 8) is None
  assert compile_cache.unsafe_reason("tpu", 256) is None
  assert "8 CPU devices" in compile_cache.unsafe_reason("cpu", 8)


# The same on 8 CPU devices, plus two programs sharded over all of them:
# `sharded_double` needs no collective (each device doubles its rows),
# `sharded_sum` does (its sum is an all-reduce).
_SHARDED_PROGRAM = _PROGRAM.replace("""  print(json.dumps""", """  mesh = jax.make_mesh((8,), ("d",))
  x = jax.device_put(jnp.arange(64.0).reshape(8, 8),
                     jax.NamedSharding(mesh, jax.P("d")))
  def sharded_double(x):
    return x * 2
  def sharded_sum(x):
    return x.sum()
  doubled = jax.jit(sharded_double)(x)
  total = jax.jit(sharded_sum)(doubled)
  assert float(total) == 2 * 63 * 64 / 2, total
  print(json.dumps""")
assert "sharded_sum" in _SHARDED_PROGRAM  # the anchor above is in _PROGRAM


@pytest.mark.multidevice
def test_several_cpu_devices_cache_programs_without_collectives_only(
    tmp_path):
  """The deadlock guard: a launcher on 8 CPU devices reads and writes the
  folder for its programs without collectives only (sharded or not), says
  why, and runs; the program with an all-reduce is compiled afresh each
  time and never stored."""
  folder = tmp_path / "jit"
  first, log = _run_program(f"--compile_cache={folder}", devices=8,
                            program=_SHARDED_PROGRAM)
  assert ("compile cache for programs without collectives only: 8 CPU "
          "devices") in log
  assert first["requests"] > 0 and first["hits"] == 0, first
  written = _entries(folder)
  assert len(written) == first["writes"] == first["requests"] - 1, first
  assert any(n.startswith("jit__lambda-") for n in written), written
  assert any(n.startswith("jit_sharded_double-") for n in written), written
  assert not any("sharded_sum" in n for n in written), written
  second, _ = _run_program(f"--compile_cache={folder}", devices=8,
                           program=_SHARDED_PROGRAM)
  assert second["requests"] == first["requests"], second
  assert second["hits"] == len(written) and second["writes"] == 0, second
  assert _entries(folder) == written


def test_a_compiled_one_device_program_has_no_collectives():
  """`has_collectives` reads a real compiled program's HLO (the 8-device
  test above finds the all-reduce of a sharded one)."""
  f = jax.jit(lambda x: (x * 2).sum())
  compiled = f.lower(jax.numpy.ones((8, 8))).compile()
  assert not compile_cache.has_collectives(compiled.runtime_executable())


class _Module:

  def __init__(self, text):
    self.text = text

  def to_string(self):
    return self.text


class _Executable:
  """What `has_collectives` reads of a jaxlib LoadedExecutable."""

  def __init__(self, *texts):
    self.texts = texts

  def hlo_modules(self):
    return [_Module(t) for t in self.texts]


@pytest.mark.parametrize("line,found", [
    ("%all-reduce.1 = f32[] all-reduce(f32[] %p), to_apply=%sum", True),
    ("%ags = (f32[2], f32[8]) all-gather-start(f32[2] %p)", True),
    ("%rs = f32[1] reduce-scatter(f32[8] %p), dimensions={0}", True),
    ("%cp = f32[4] collective-permute(f32[4] %p)", True),
    ("%a2a = f32[8] all-to-all(f32[8] %p)", True),
    ("%s = (f32[2], u32[], token[]) send(f32[2] %p, token[] %t)", True),
    # An instruction named after a collective is not one.
    ("%all-reduce.3 = f32[] add(f32[] %a, f32[] %b)", False),
    ("%multiply.2 = f32[8] multiply(f32[8] %x, f32[8] %y)", False),
])
def test_collective_instructions_in_hlo_text(line, found):
  assert compile_cache.has_collectives(_Executable("ENTRY %m {", line)) is (
      found)
  assert not compile_cache.has_collectives(_Executable())


class _Unreadable:

  def hlo_modules(self):
    raise RuntimeError("no HLO for this executable")


def test_the_write_filter_stores_collective_free_programs_only(monkeypatch):
  """The wrapped `_cache_write` passes a program on when its HLO holds no
  collective; one with a collective, or whose HLO cannot be read, is not
  stored (the safe side)."""
  from jax._src import compiler  # pylint: disable=g-import-not-at-top
  stored = []
  monkeypatch.setattr(compiler, "_cache_write",
                      lambda key, *args: stored.append(key))
  assert compile_cache.collective_free_programs_only()
  write = compiler._cache_write  # pylint: disable=protected-access
  assert write.collective_free_only
  assert compile_cache.collective_free_programs_only()  # wraps once
  assert compiler._cache_write is write  # pylint: disable=protected-access
  for key, executable in (
      ("plain", _Executable("%m = f32[8] multiply(f32[8] %x, f32[8] %y)")),
      ("reduce", _Executable("%r = f32[] all-reduce(f32[] %p)")),
      ("unreadable", _Unreadable())):
    write(key, 1.0, "jit_f", None, executable, [])
  assert stored == ["plain"]
