"Headless Chromium (Debian's chromium + chromium-driver, through selenium) and a local voila server, for the tests that look at pages as a person would."
import os, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from contextlib import contextmanager
from pathlib import Path
import pytest

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE/'artifacts'
CHROMIUM_ARGS = ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage', '--window-size=1400,1800',
                 '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost']   # nothing beyond this machine

def find_chromium():
    for c in (os.environ.get('CHROMIUM'), '/usr/bin/chromium', shutil.which('chromium'), shutil.which('chromium-browser')):
        if c and os.path.exists(c): return c
    return None

def chrome(tmp_path):
    "A selenium Chrome driver on Debian's chromium, or a pytest skip that says what is missing"
    try: from selenium import webdriver
    except ImportError: pytest.skip('selenium is not installed (pip install selenium)')
    exe, drv = find_chromium(), shutil.which('chromedriver') or '/usr/bin/chromedriver'
    if exe is None or not os.path.exists(drv): pytest.skip('Debian chromium and chromium-driver are not installed (apt-get install -y chromium chromium-driver)')
    opts = webdriver.ChromeOptions(); opts.binary_location = exe
    for a in CHROMIUM_ARGS + [f'--user-data-dir={tmp_path/"chrome-profile"}']: opts.add_argument(a)
    opts.page_load_strategy = 'none'
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    os.environ.setdefault('SE_OFFLINE', 'true')
    from selenium.webdriver.chrome.service import Service
    return webdriver.Chrome(options=opts, service=Service(drv))

def free_port():
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

@contextmanager
def http_server(folder):
    "Serve `folder` with python's http.server on a free local port; yields the base URL"
    port = free_port()
    p = subprocess.Popen([sys.executable, '-m', 'http.server', str(port), '--bind', '127.0.0.1', '-d', str(folder)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f'http://127.0.0.1:{port}/'
    try:
        for _ in range(100):
            try: urllib.request.urlopen(base, timeout=1); break
            except OSError: time.sleep(0.1)
        yield base
    finally: p.terminate(); p.wait(10)

# Kernels started by the voila server below run this at start-up (a private IPython dir, so the user's profile,
# history database and start-up files play no part): `kill -USR1 <kernel>` writes every thread's Python stack to the
# kernel's real stderr, which is the voila log.
_KERNEL_STARTUP = "import faulthandler, signal, sys\nfaulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True)\n"
# The voila server itself: `kill -USR2 <server>` writes where each of its asyncio tasks waits to its stderr (the voila log).
_SERVER_START = """
import asyncio, io, signal, sys
def _tasks(*_):
    out = io.StringIO()
    for t in asyncio.all_tasks(asyncio._get_running_loop()): t.print_stack(file=out)
    sys.stderr.write('voila server asyncio tasks:\\n' + out.getvalue()); sys.stderr.flush()
signal.signal(signal.SIGUSR2, _tasks)
from voila.app import main
sys.exit(main())
"""

def voila_diagnose(proc, out_path):
    "What a stalled voila page's server and kernels are doing: a process table in `out_path`; the kernels' Python stacks and the server's asyncio tasks in the voila log"
    import psutil
    rows = []
    for p in psutil.process_iter(['pid', 'ppid', 'status', 'cpu_times', 'num_threads', 'cmdline']):
        i = p.info; ct = i['cpu_times']
        rows.append(f"{i['pid']:>7} {i['ppid']:>7} {i['status']:<9} cpu {ct.user + ct.system if ct else 0:8.1f}s "
                    f"threads {i['num_threads'] or 0:>3}  {' '.join(i['cmdline'] or [])[:200]}")
    kernels = [c for c in psutil.Process(proc.pid).children(recursive=True) if 'ipykernel' in ' '.join(c.cmdline())]
    load = os.getloadavg()
    Path(out_path).write_text(f"load average {load}\nkernels {[k.pid for k in kernels]}\n" + '\n'.join(rows) + '\n')
    for k in kernels:
        try: k.send_signal(signal.SIGUSR1)
        except psutil.Error: pass
    if proc.poll() is None: proc.send_signal(signal.SIGUSR2)
    time.sleep(1)

@contextmanager
def voila(notebook, timeout=120, log_path=None):
    """A voila server serving `notebook` exactly as `mess_fast explore` does (`mess_fast.explore.voila_command`: offline
    template, re-checking kernel client); yields its base URL and the server process, and always shuts it and its kernels down"""
    try: import voila as _  # noqa: F401
    except ImportError: pytest.skip('voila is not installed (pip install voila)')
    from mess_fast.explore import voila_command, template_root
    port = free_port()
    ipy = Path(tempfile.mkdtemp(prefix='mess-voila-ipython-'))
    (ipy/'profile_default'/'startup').mkdir(parents=True)
    (ipy/'profile_default'/'startup'/'00-faulthandler.py').write_text(_KERNEL_STARTUP)
    argv, env = voila_command(Path(notebook).resolve(), port, template_root(ipy/'jupyter'))   # the command `mess_fast explore` runs
    env.update(PYTHONUNBUFFERED='1', MPLBACKEND='module://matplotlib_inline.backend_inline', IPYTHONDIR=str(ipy))
    assert argv[1:3] == ['-m', 'voila']
    cmd = [argv[0], '-c', _SERVER_START] + argv[3:] + ['--show_tracebacks=True']   # voila, with its asyncio tasks on SIGUSR2
    log_path = Path(log_path or ARTIFACTS/f'voila-{port}.log'); log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, 'w')
    proc = subprocess.Popen(cmd, cwd=Path(notebook).parent, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f'http://127.0.0.1:{port}/'
    try:
        deadline = time.monotonic() + timeout
        while True:   # a static file: GET / would start a kernel
            if proc.poll() is not None: raise RuntimeError(f'voila exited early (rc={proc.returncode}):\n{log_path.read_text()[-3000:]}')
            try:
                with urllib.request.urlopen(base + 'voila/static/voila.js', timeout=2) as r:
                    if r.status == 200: break
            except OSError: pass
            if time.monotonic() > deadline: raise TimeoutError(f'voila not up after {timeout}s:\n{log_path.read_text()[-3000:]}')
            time.sleep(0.25)
        yield base, proc
    finally:
        shutil.rmtree(ipy, ignore_errors=True)
        if proc.poll() is None:
            proc.terminate()
            try: proc.wait(15)
            except subprocess.TimeoutExpired: pass
        try: os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError: pass
        proc.wait(); log.close()
