"Running the `mess_fast` command in tests: in this process (fast) or as the installed console script in a fresh process."
import contextlib, io, os, subprocess, sys
from pathlib import Path

def cli(*args):
    "Run `mess_fast ARGS` in this process as the console script does: (exit code, stdout, stderr). An exception escaping is a traceback."
    from mess_fast import cli as C
    old, out, err = sys.argv, io.StringIO(), io.StringIO()
    sys.argv = ['mess_fast', *map(str, args)]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try: rc = C.main()
            except SystemExit as e:                       # what the interpreter does with it
                if isinstance(e.code, str): print(e.code, file=sys.stderr); rc = 1
                else: rc = e.code or 0
    finally: sys.argv = old
    return rc, out.getvalue(), err.getvalue()

def console(*args, cwd, timeout=600):
    "Run the installed `mess_fast` console script in a fresh process, with Python's default warning filters"
    exe = Path(sys.executable).parent/'mess_fast'
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-c', 'import sys; from mess_fast.cli import main; sys.exit(main())']
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONWARNINGS', 'MESS_FAST_DEBUG', 'MESS_FAST_DATA')}
    env.update(MPLBACKEND='Agg', OMP_WAIT_POLICY='PASSIVE')
    return subprocess.run(cmd + [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)

def one_line_error(rc, err, *words):
    "Exit code 1 and a single line on stderr (no traceback) that contains every one of `words`; returns the line"
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 1 and len(lines) == 1 and 'Traceback' not in err, (rc, err[-2000:])
    for w in words: assert w in lines[0], (w, lines[0])
    return lines[0]
