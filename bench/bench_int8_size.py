"""Does int8 pay at a larger input? Per-exit ONNX Runtime latency, float32 against static int8, of an untrained
LR-ASPP-MobileNetV3 MESS network (latency does not depend on the weights) at several input sizes.

The int8 benchmark (`bench_int8.py`) found LR-ASPP's int8 exits 0.70-1.31x as fast as float32 at 120x160, where every
graph is tiny and fixed costs dominate. This measures whether a larger input (CamVid's own 360x480) changes that.
Per-exit latencies come from `profile_onnx` (batch size 1, 2 threads), float32 and int8 profiled in alternation,
the lower of two rounds kept. The quantizer calibrates on 20 frames of sequence 0016E5. Writes results/int8_size.json
and results/int8_size.txt.

    python bench/bench_int8_size.py      # about 3 min here
"""
import os
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
import json, datetime, platform, tempfile
from pathlib import Path
import torch, onnxruntime as ort
from fastcore.script import call_parse
from mess_fast.data import camvid_path, CAMVID_CODES
from mess_fast.loaders import IMAGENET_MEAN, IMAGENET_STD
from mess_fast.model import MESSNet
from mess_fast.export import export_onnx
from mess_fast.runtime import OnnxEarlyExitRunner
from mess_fast.onnx_search import profile_onnx
from common import RESULTS

@call_parse
def main(arch:str='tv:lraspp_mobilenet_v3_large', # Network to convert (untrained: pretrained=False)
         sizes:str='120x160,360x480',             # Input sizes, HxW, comma-separated
         positions:str='6,12',                    # Exit positions (an FCN and an ASPP head at each)
         rounds:int=2, reps:int=20, threads:int=2):
    torch.set_num_threads(threads); torch.manual_seed(0)
    net = MESSNet(arch, n_classes=len(CAMVID_CODES), pretrained=False,
                  exits=[f'{p}:{h}' for p in positions.split(',') for h in ('fcn-b0', 'aspp-crm-b0')]).eval()
    calib = [str(p) for p in sorted((camvid_path()/'train').glob('0016E5*.png'))[::8][:20]]
    rows, lines = [], [f"{arch} (untrained), ONNX Runtime {ort.__version__}, batch size 1, {threads} threads, "
                       f"ms per image answering at each exit alone (profile_onnx, best of {rounds} rounds)"]
    for s in sizes.split(','):
        size = [int(v) for v in s.split('x')]
        inp = dict(size=size, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), codes=list(CAMVID_CODES), void=None)
        tmp = Path(tempfile.mkdtemp())
        dirs = dict(fp32=export_onnx(net, tmp/'f', all_exits=True, input=inp, verify=False),
                    int8=export_onnx(net, tmp/'i', all_exits=True, input=inp, quantize='int8', calib=calib,
                                     verify=False))
        ms = {}
        for _ in range(rounds):
            for rt, d in dirs.items():
                p = profile_onnx(OnnxEarlyExitRunner(d, threads=threads), reps=reps, progress=False)
                for k in p.exit_keys: ms.setdefault((rt, k), []).append(p.exit_latency(k))
        for k in p.exit_keys:
            a, b = min(ms[('fp32', k)]), min(ms[('int8', k)])
            rows.append(dict(size=size, exit=k, ms_fp32=a, ms_int8=b, speedup=a / b))
            lines.append(f"{size[0]}x{size[1]}  {k:16s} float32 {a:7.2f}  int8 {b:7.2f}  x{a / b:.2f}")
    print('\n'.join(lines))
    res = dict(date=datetime.datetime.now().isoformat(timespec='seconds'), arch=arch, torch=torch.__version__,
               onnxruntime=ort.__version__, python=platform.python_version(), threads=threads, rows=rows)
    (RESULTS/'int8_size.json').write_text(json.dumps(res, indent=1))
    (RESULTS/'int8_size.txt').write_text('\n'.join(lines) + '\n')
