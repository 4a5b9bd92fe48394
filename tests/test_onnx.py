"""ONNX export and the ONNX Runtime early-exit runner: parity with the torch predictor on the embedded CamVid frames,
budgeted deployments, unusual chains, bad input, and the runtime running where torch cannot be imported.

The test in a fresh venv with only onnxruntime, numpy and pillow downloads them (about 30 s with a network): it runs
when MESS_FAST_SLOW=1 is set."""
import csv, json, os, shutil, subprocess, sys, textwrap, warnings
from pathlib import Path

import numpy as np, pytest, torch
from PIL import Image
from mess_fast.core import FINAL
from mess_fast.loaders import mess_dls, labelled_dl, input_meta
from mess_fast.policy import ExitPolicy, pixel_confidence
from mess_fast.predict import EarlyExitPredictor
from mess_fast.fixtures import tiny_net as _tiny_net
from mess_fast.export import export_onnx, export_job
from mess_fast import fixtures
from mess_fast.runtime import OnnxEarlyExitRunner, onnx_predict_job, read_manifest, MANIFEST
ROOT = Path(__file__).resolve().parents[1]
EXITS = ['1:fcn-b0', '3:aspp-crm-b0', '5:fcn-crm-b1-rdi']

def tiny_net(exits, n_classes=12, seed=0):
    "An untrained ResNet-18 MESSNet at output stride 16 with random batch-norm statistics (so that folding them is exercised)"
    return _tiny_net(exits, n_classes, output_stride=16, seed=seed)

def spread_policy(net, xb, exits, **kw):
    "Per-exit thresholds at medians of the images still there, so that images leave at every exit"
    with torch.no_grad(): feats = net.features(xb)
    tp, ti, rest = {}, {}, torch.arange(len(xb))
    for k in exits:
        with torch.no_grad(): nat = net.exit_logits(k, feats[net.exit_pos(k)])
        tp[k] = float(pixel_confidence(nat, kw.get('kind', 'top1')).quantile(0.3))
        ic = ExitPolicy(tp, **kw)(nat[rest], k, net.exit_stride(k))[1]
        ti[k] = float(ic.sort().values[len(ic) // 2]) if len(ic) else 1.
        rest = rest[ic < ti[k]]
    return ExitPolicy(tp, ti, **kw)

@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('onnx')
    dls = mess_dls(bs=8, augment=False)                      # the embedded CamVid subset, 120x160
    pairs = dls.source.valid
    dl = labelled_dl(dls, pairs, bs=8)
    xb = torch.cat([b[0] for b in dl]).as_subclass(torch.Tensor)
    net = tiny_net(EXITS)
    net.meta = dict(input=input_meta(dls))
    pred = EarlyExitPredictor(net, EXITS, spread_policy(net, xb, EXITS))
    out = export_onnx(pred, tmp/'onnx')
    return dict(tmp=tmp, dls=dls, pairs=pairs, dl=dl, xb=xb, net=net, pred=pred, out=out,
                runner=OnnxEarlyExitRunner(out, threads=2))

def agreement(ref, res):
    "(fraction of images with the same exit, fraction of their pixels with the same label)"
    same = np.array([a == b for a, b in zip(ref['exits'], res['exits'])])
    px = (np.asarray(ref['masks'])[same] == res['masks'][same]).mean() if same.any() else 1.
    return same.mean(), px

def test_manifest(setup):
    man = read_manifest(setup['out'])
    assert [p['key'] for p in man['parts']] == EXITS + [FINAL] and man['mode'] == 'dynamic' and man['opset'] == 17
    assert man['input']['size'] == [120, 160] and man['classes'] == list(setup['dls'].vocab) and man['void'] == setup['dls'].void_code
    assert sorted(man['files']) == ['finish.onnx', 'part0.onnx', 'part1.onnx', 'part2.onnx', 'part3.onnx']
    pol = setup['pred'].policy
    for p in man['parts'][:-1]: assert (p['th_pix'], p['th_img']) == pol.thresholds(p['key'])
    assert len(man['palette']) == 12
    assert not any(m.training for m in setup['net'].modules())              # the export left the network in eval mode

def test_parity_batch(setup):
    "Same exits, image confidences and labels as EarlyExitPredictor on a batch of real frames"
    ref = setup['pred'].predict_batch(setup['xb'])
    res = setup['runner'].predict_batch(setup['xb'].numpy())
    assert len(set(ref['exits'])) == 4, ref['exits']                        # images leave at every exit
    same, px = agreement(dict(exits=ref['exits'], masks=ref['masks'].numpy()), res)
    assert same >= 0.99 and px >= 0.999, (same, px)
    ok = [i for i, (a, b) in enumerate(zip(ref['exits'], res['exits'])) if a == b]
    np.testing.assert_array_equal(res['conf'][ok], ref['conf'].numpy()[ok])

def test_parity_evaluate(setup):
    "evaluate on (image, mask) files without torch gives the torch predictor's mIoU and exits"
    et = setup['pred'].evaluate(setup['dl'])
    eo = setup['runner'].evaluate(setup['pairs'])
    assert eo['n'] == et['n'] == len(setup['pairs'])
    assert np.mean([a == b for a, b in zip(et['exits'], eo['exits'])]) >= 0.99
    assert abs(eo['miou'] - et['miou']) * 100 <= 0.1, (eo['miou'], et['miou'])
    assert eo['hist'] == et['hist'] and eo['latency_ms'] > 0
    assert np.abs(eo['cm'] - et['cm'].numpy()).sum() <= 0.001 * et['cm'].sum()

@pytest.mark.parametrize('kw', [dict(kind='entropy'), dict(edge=False), dict(s=1, window=3), dict(exclude=11)])
def test_parity_policies(setup, kw, tmp_path):
    net, xb = setup['net'], setup['xb'][:12]
    pred = EarlyExitPredictor(net, EXITS, spread_policy(net, xb, EXITS, **kw))
    runner = OnnxEarlyExitRunner(export_onnx(pred, tmp_path/'o', verify=False), threads=2)
    ref, res = pred.predict_batch(xb), runner.predict_batch(xb.numpy())
    same, px = agreement(dict(exits=ref['exits'], masks=ref['masks'].numpy()), res)
    assert same >= 0.99 and px >= 0.999, (same, px, kw)
    assert len(set(ref['exits'])) >= 3

def test_budgeted(setup, tmp_path):
    net, xb = setup['net'], setup['xb'][:6]
    for k in ['3:aspp-crm-b0', FINAL]:
        pb = EarlyExitPredictor(net.pruned([k]), [], budget=k)
        rb = OnnxEarlyExitRunner(export_onnx(pb, tmp_path/k.replace(':', '_')), threads=2)
        assert rb.budget == k and rb.exits == [k] and rb.finish is None and len(rb.manifest['files']) == 1
        res, ref = rb.predict_batch(xb.numpy()), pb.predict_batch(xb)
        assert res['exits'] == [k] * len(xb) and np.isnan(res['conf']).all()
        assert (res['masks'] == ref['masks'].numpy()).mean() >= 0.999
    # answering at one exit of a dynamic deployment
    for k in setup['runner'].exits:
        res, ref = setup['runner'].predict_batch(xb.numpy(), exit_key=k), setup['pred'].predict_batch(xb, exit_key=k)
        assert res['exits'] == [k] * len(xb) and (res['masks'] == ref['masks'].numpy()).mean() >= 0.999

@pytest.mark.parametrize('exits', [['3:fcn-b0', '3:aspp-crm-b0'], ['7:fcn-b0'], ['0:fcn-b0', '7:fcn-b0']])
def test_unusual_chains(exits, tmp_path):
    "Two exits at one position (a part without segments) and an exit at the last position (a final part without segments)"
    net = tiny_net(exits, n_classes=5)
    net.meta = dict(input=dict(size=[48, 64], mean=[0.5] * 3, std=[0.25] * 3, codes=list('abcde'), void=None))
    xb = torch.randn(8, 3, 48, 64, generator=torch.Generator().manual_seed(2)) * torch.linspace(0.2, 3, 8)[:, None, None, None]
    pred = EarlyExitPredictor(net, exits, spread_policy(net, xb, exits))
    runner = OnnxEarlyExitRunner(export_onnx(pred, tmp_path/'o'), threads=1)
    ref, res = pred.predict_batch(xb), runner.predict_batch(xb.numpy())
    same, px = agreement(dict(exits=ref['exits'], masks=ref['masks'].numpy()), res)
    assert same == 1 and px >= 0.999

def test_bad_input(setup, tmp_path):
    out, runner, pred = setup['out'], setup['runner'], setup['pred']
    with pytest.raises(FileNotFoundError, match='no manifest.json; expected a folder written by export_onnx'): OnnxEarlyExitRunner(tmp_path)
    with pytest.raises(FileNotFoundError, match='no such folder'): OnnxEarlyExitRunner(tmp_path/'missing')
    bad = tmp_path/'bad'; shutil.copytree(out, bad)
    g = bad/'part2.onnx'; data = g.read_bytes(); g.write_bytes(data[:-4] + bytes(4))
    with pytest.raises(ValueError, match=r'part2.onnx: does not match manifest.json \(sha256'): OnnxEarlyExitRunner(bad)
    g.unlink()
    with pytest.raises(FileNotFoundError, match='part2.onnx: missing; manifest.json lists it'): OnnxEarlyExitRunner(bad)
    (bad/MANIFEST).write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match='not a mess_fast ONNX manifest'): OnnxEarlyExitRunner(bad)
    (bad/MANIFEST).write_text('{oops')
    with pytest.raises(ValueError, match='not a readable manifest'): OnnxEarlyExitRunner(bad)
    # images: the wrong number of channels, as an array, a float batch or a file
    with pytest.raises(ValueError, match=r'image array has shape \(30, 40, 2\); expected \(H, W\) grey, \(H, W, 3\) RGB'):
        runner.predict(np.zeros((30, 40, 2), np.uint8))
    with pytest.raises(ValueError, match=r'Expected a normalised batch of shape \(B, 3, 120, 160\)'):
        runner.predict_batch(np.zeros((1, 4, 120, 160), np.float32))
    with pytest.raises(ValueError, match=r'got shape \(1, 3, 60, 80\)'): runner.predict_batch(np.zeros((1, 3, 60, 80), np.float32))
    with pytest.raises(TypeError, match='got Tensor'): runner.predict_batch(setup['xb'][:1])
    with pytest.raises(FileNotFoundError, match='nope.png: no such image file'): runner.predict(tmp_path/'nope.png')
    (tmp_path/'not_an_image.png').write_text('hello')
    with pytest.raises(ValueError, match='not_an_image.png: cannot read image'): runner.predict(tmp_path/'not_an_image.png')
    with pytest.raises(KeyError, match="No exit '2:fcn-b0' in this deployment"): runner.predict_batch(setup['xb'][:1].numpy(), exit_key='2:fcn-b0')
    with pytest.raises(ValueError, match='mask has mode RGB'): runner.evaluate([(setup['pairs'][0][0], setup['pairs'][0][0])])
    # export: never into a non-empty folder, only native-resolution policies, input settings needed
    with pytest.raises(FileExistsError, match='exists and is not empty'): export_onnx(pred, out)
    full = EarlyExitPredictor(setup['net'], EXITS, ExitPolicy(0.5, 0.5, at='full'))
    with pytest.raises(ValueError, match="at='native'"): export_onnx(full, tmp_path/'full')
    assert not (tmp_path/'full').exists() and not (tmp_path/'.full.partial').exists()
    bare = tiny_net(['1:fcn-b0'])
    with pytest.raises(ValueError, match=r"no input settings"): export_onnx(EarlyExitPredictor(bare, ['1:fcn-b0']), tmp_path/'bare')
    with pytest.raises(ValueError, match=r"no input settings"): export_onnx(bare, tmp_path/'b2')   # a bare MESSNet: all its heads
    with pytest.raises(TypeError, match='Expected an EarlyExitPredictor, a MESSNet or the path of a deployed checkpoint'): export_onnx(42, tmp_path/'b3')
    with pytest.raises(FileNotFoundError, match='no such file or folder'): export_job(tmp_path/'no_run', out=tmp_path/'x')

def test_export_job_and_predict_job(setup, tmp_path):
    setup['pred'].save(tmp_path/'run'/'search'/'deployed.pth')
    o = export_job(tmp_path/'run', out=tmp_path/'onnx', log=lambda *a: None)
    assert read_manifest(o)['files'] == read_manifest(setup['out'])['files']     # same graphs, byte for byte
    imgs = [p for p, _ in setup['pairs'][:3]]
    p1 = onnx_predict_job(o, imgs, out=tmp_path/'pred', threads=2, log=lambda *a: None)
    p2 = onnx_predict_job(o, imgs[:1], out=tmp_path/'pred', threads=2, log=lambda *a: None)
    assert (p1.name, p2.name) == ('pred', 'pred-2')
    rows = list(csv.DictReader(open(p1/'predictions.csv')))
    assert [r['image'] for r in rows] == [Path(p).name for p in imgs] and list(rows[0]) == ['image', 'mask', 'exit', 'confidence', 'latency_ms']
    m = Image.open(p1/rows[0]['mask'])
    assert m.mode == 'P' and m.size == Image.open(imgs[0]).size
    ref = setup['runner'].predict(imgs[0])
    assert rows[0]['exit'] == ref[1]

def test_int8(setup, tmp_path):
    """export_onnx(quantize='int8'): the runner runs the int8 graphs unchanged, the manifest records the quantization, the graphs are
    quantized, the policy stays float (its image confidences of the int8 logits are ExitPolicy's, bit for bit), and the labels on
    frames it was not calibrated on agree with the float32 deployment's within INT8_TOLERANCE['labels'] at every exit"""
    from mess_fast.quantize import INT8, INT8_TOLERANCE
    import onnx, onnxruntime as ort
    exits = ['1:fcn-b0', '3:aspp-crm-b0']
    net = fixtures.tiny_net(exits)                              # untrained ResNet-18, output stride 32, random BatchNorm statistics
    net.meta = dict(input=input_meta(setup['dls']))
    xb = setup['xb']
    cal, held = xb[:12], xb[12:]
    assert len(held) >= 8
    pred = EarlyExitPredictor(net, exits, spread_policy(net, cal, exits))
    r32 = OnnxEarlyExitRunner(export_onnx(pred, tmp_path/'f32'), threads=2)
    r8 = OnnxEarlyExitRunner(export_onnx(pred, tmp_path/'i8', quantize='int8', calib=cal), threads=2)
    m8 = r8.manifest
    assert (r32.manifest['quantize'], m8['quantize'], r8.quantize) == (None, 'int8', 'int8') and 'quantization' not in r32.manifest
    q = m8['quantization']
    assert {k: q[k] for k in INT8} == INT8 and q['frames'] == len(cal) and q['tolerance'] == INT8_TOLERANCE
    assert set(q['graphs']) == {p['file'] for p in m8['parts']} and r8.exits == r32.exits == exits + [FINAL]
    for p in m8['parts']:                                       # every network graph holds int8 weights and activations
        ops = [n.op_type for n in onnx.load(str(tmp_path/'i8'/p['file'])).graph.node]
        assert ops.count('QuantizeLinear') >= 3 and ops.count('DequantizeLinear') >= 3, (p['file'], ops.count('QuantizeLinear'))
        assert (tmp_path/'i8'/p['file']).stat().st_size < 0.5 * (tmp_path/'f32'/p['file']).stat().st_size
    assert not [n for n in onnx.load(str(tmp_path/'i8'/m8['finish'])).graph.node if n.op_type == 'QuantizeLinear']
    # the runner runs it unchanged, and the float policy decides on the int8 logits exactly as ExitPolicy does
    res = r8.predict_batch(held.numpy())
    assert len(res['exits']) == len(held) and set(res['exits']) <= set(r8.exits) and res['masks'].shape == (len(held), 120, 160)
    p0 = r8.parts[0]
    s = ort.InferenceSession(str(tmp_path/'i8'/p0['file']), providers=['CPUExecutionProvider'])
    _, nat, ok, n = s.run(None, {'x': held.numpy(), 'th_pix': p0['th_pix_arr']})
    leave, conf = pred.policy(torch.from_numpy(nat), p0['key'], net.exit_stride(p0['key']))
    np.testing.assert_array_equal(r8.policy.decide(ok, n, p0['key'])[1], conf.numpy())
    assert [k == p0['key'] for k in res['exits']] == leave.tolist()
    # labels at every exit, on frames the quantization never saw, against float32 (graph for graph, no decisions)
    agree = {k: float((r8.predict_batch(held.numpy(), exit_key=k)['masks'] == r32.predict_batch(held.numpy(), exit_key=k)['masks']).mean())
             for k in r8.exits}
    assert min(agree.values()) >= INT8_TOLERANCE['labels'], agree
    assert max(agree.values()) < 1, agree                       # int8 is not float32 in disguise

def test_int8_fallback(setup, tmp_path, monkeypatch):
    """A graph whose int8 twin fails the check stays float32 (warned, listed in the manifest, answering as the float32
    deployment does); with fallback=False the export fails and leaves nothing behind"""
    from mess_fast import quantize
    exits = ['1:fcn-b0']
    net = fixtures.tiny_net(exits)
    net.meta = dict(input=input_meta(setup['dls']))
    xb = setup['xb']
    pred = EarlyExitPredictor(net, exits, spread_policy(net, xb[:8], exits))
    monkeypatch.setitem(quantize.INT8_TOLERANCE, 'rel_error', 0.)     # no int8 graph can pass: every graph falls back
    monkeypatch.setitem(quantize.INT8_TOLERANCE, 'labels', 1.01)      # (the last part, whose outputs are labels, too)
    with pytest.raises(RuntimeError, match=r"part0\.onnx: int8 outputs .* relative error of .* \(> 0\.0\)"):
        export_onnx(pred, tmp_path/'strict', quantize='int8', calib=xb[:8], fallback=False)
    assert not (tmp_path/'strict').exists() and not list(tmp_path.glob('.strict*'))
    with pytest.warns(UserWarning, match='kept float32'):
        d = export_onnx(pred, tmp_path/'mixed', quantize='int8', calib=xb[:8])
    q = json.loads((d/'manifest.json').read_text())['quantization']
    files = [p['file'] for p in json.loads((d/'manifest.json').read_text())['parts']]
    assert q['float32_graphs'] == files and not any(q['graphs'][f]['int8'] for f in files)
    assert 'relative error' in q['graphs']['part0.onnx']['kept_float32'] and 'labels' in q['graphs']['part1.onnx']['kept_float32']
    import onnx
    assert not [n for f in files for n in onnx.load(str(d/f)).graph.node if n.op_type == 'QuantizeLinear']
    r32 = OnnxEarlyExitRunner(export_onnx(pred, tmp_path/'f32'), threads=2)
    got, ref = OnnxEarlyExitRunner(d, threads=2).predict_batch(xb.numpy()), r32.predict_batch(xb.numpy())
    assert got['exits'] == ref['exits'] and (got['masks'] == ref['masks']).all()
    monkeypatch.undo()                                                # the real check: this network quantizes, no fallback
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        q = json.loads((export_onnx(pred, tmp_path/'i8', quantize='int8', calib=xb[:8])/'manifest.json').read_text())
    assert q['quantization']['float32_graphs'] == [] and all(g['int8'] for g in q['quantization']['graphs'].values())

SCRIPT = textwrap.dedent('''
    import sys, json
    for m in ('torch', 'torchvision', 'fastai', 'fastcore', 'pandas', 'matplotlib', 'onnx'): sys.modules[m] = None   # any import fails
    import numpy as np
    from mess_fast.runtime import OnnxEarlyExitRunner, onnx_predict_job
    d = json.loads(sys.argv[1])
    r = OnnxEarlyExitRunner(d['out'], threads=2)
    res = r.predict_batch(np.load(d['xb']))
    ev = r.evaluate([tuple(p) for p in d['pairs']])
    job = onnx_predict_job(d['out'], [p for p, _ in d['pairs']], out=d['pred'], threads=2, log=lambda *a: None)
    print(json.dumps(dict(exits=res['exits'], masks_file=d['masks'], miou=ev['miou'], eval_exits=ev['exits'], n_masks=len(list(job.glob('*.png'))),
                          mods=sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'fastai', 'fastcore', 'pandas') and sys.modules[m] is not None))))
    np.save(d['masks'], res['masks'])
''')

def run_without_torch(setup, tmp_path, python, pythonpath):
    xb = setup['xb'][:8]
    np.save(tmp_path/'xb.npy', xb.numpy())
    pairs = [[str(a), str(b)] for a, b in setup['pairs'][:6]]
    arg = json.dumps(dict(out=str(setup['out']), xb=str(tmp_path/'xb.npy'), masks=str(tmp_path/'masks.npy'), pairs=pairs, pred=str(tmp_path/'pred')))
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'} | dict(PYTHONPATH=str(pythonpath), OMP_WAIT_POLICY='PASSIVE')
    r = subprocess.run([str(python), '-c', SCRIPT, arg], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    ref = setup['pred'].predict_batch(xb)
    assert out['mods'] == [] and out['n_masks'] == 6
    assert out['exits'] == ref['exits']
    assert (np.load(tmp_path/'masks.npy') == ref['masks'].numpy()).mean() >= 0.999
    et = setup['pred'].evaluate(labelled_dl(setup['dls'], setup['pairs'][:6]))
    assert abs(out['miou'] - et['miou']) * 100 <= 0.1 and out['eval_exits'] == et['exits']

def test_runtime_without_torch(setup, tmp_path):
    "The runtime imports and runs with torch, fastai, fastcore, pandas, matplotlib and onnx unimportable"
    run_without_torch(setup, tmp_path, sys.executable, ROOT)

@pytest.mark.skipif(not os.environ.get('MESS_FAST_SLOW'), reason='downloads onnxruntime, numpy and pillow into a fresh venv: set MESS_FAST_SLOW=1')
def test_runtime_in_minimal_venv(setup, tmp_path):
    "A fresh venv with only onnxruntime, numpy and pillow, and the mess_fast modules the runtime imports copied beside it"
    venv = tmp_path/'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True, timeout=120)
    py = venv/('Scripts' if os.name == 'nt' else 'bin')/'python'
    r = subprocess.run([str(py), '-m', 'pip', 'install', '-q', '--disable-pip-version-check', 'onnxruntime', 'numpy', 'pillow'],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0: pytest.skip(f"pip could not install onnxruntime, numpy and pillow (offline?): {r.stderr.strip()[-300:]}")
    r = subprocess.run([str(py), '-m', 'pip', 'list', '--format=json'], capture_output=True, text=True, check=True)
    assert not {p['name'].lower() for p in json.loads(r.stdout)} & {'torch', 'fastai', 'fastcore'}
    pkg = tmp_path/'pkg'/'mess_fast'; pkg.mkdir(parents=True)
    for f in ('__init__.py', 'core.py', 'imaging.py', 'policy.py', 'runtime.py'): shutil.copy(ROOT/'mess_fast'/f, pkg/f)
    run_without_torch(setup, tmp_path, py, tmp_path/'pkg')

def test_controlled_traces_are_the_same_in_both_runtimes(setup):
    "Issue 25: one seed, the same audits, exits, losses and offsets in torch and in ONNX Runtime; the predictors keep their own offset"
    from mess_fast.policy import RiskController
    kw = dict(alpha=0.05, p=0.5, gamma=0.5, seed=3)
    pred, runner = setup['pred'], setup['runner']
    et = pred.evaluate(setup['dl'], controller=RiskController(**kw))
    eo = runner.evaluate(setup['pairs'], controller=RiskController(**kw))
    assert len(et['trace']) == len(eo['trace']) == len(setup['pairs'])
    for k in ('exit', 'audited', 'theta', 'theta_after', 'flag'):
        assert [t[k] for t in et['trace']] == [t[k] for t in eo['trace']], k
    np.testing.assert_array_equal([t['loss'] for t in et['trace']], [t['loss'] for t in eo['trace']])
    assert any(t['audited'] for t in et['trace']) and len({t['theta_after'] for t in et['trace']}) > 1   # it did move
    assert pred.policy.offset == 0 and runner.policy.offset == 0                                        # restored after the stream
    free = pred.evaluate(setup['dl'])
    assert RiskController(p=0.).p == 0 and pred.evaluate(setup['dl'], controller=RiskController(p=0.))['exits'] == free['exits']

def test_predict_jobs_default_step_in_both_runtimes(setup, tmp_path):
    "The default step of `predict --audit` is `step_size` of the deployment's thresholds, read from the checkpoint or the manifest"
    from mess_fast.jobs import predict_job, predict_onnx_job
    from mess_fast.policy import step_size
    imgs = [p for p, _ in setup['pairs'][:2]]
    want = step_size(setup['pred'].policy)
    assert want == step_size(ExitPolicy(**read_manifest(setup['out'])['policy'])) > 0
    setup['pred'].save(tmp_path/'dep.pth')
    for name, job, src in (('torch', predict_job, tmp_path/'dep.pth'), ('onnx', predict_onnx_job, setup['out'])):
        job(src, imgs, out=tmp_path/name, audit=1., state=str(tmp_path/f'{name}.json'), log=lambda *a: None)
        assert json.loads((tmp_path/f'{name}.json').read_text())['gamma'] == pytest.approx(want), name
