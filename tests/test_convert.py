"Converted segmentation models: exact final exit for every supported constructor, candidates, names that rebuild (in a fresh process too), errors, offline, and the whole MESS pipeline on one model of each family."
import json, os, socket, subprocess, sys, time, warnings
import numpy as np, pytest, torch, torch.nn as nn, torchvision
from mess_fast.core import FINAL
from mess_fast.model import MESSNet, Tapped
from mess_fast.convert import *
from mess_fast.train import mess_learner
from mess_fast.predict import EarlyExitPredictor
from mess_fast.policy import ExitPolicy, pixel_confidence
from mess_fast.profile import profile_net
from mess_fast.cache import build_cache, ExitConfig
from mess_fast.search import search

warnings.filterwarnings('ignore', category=UserWarning)
SEG = torchvision.models.segmentation

def random_bn(m):
    "Random BatchNorm statistics and affine parameters, so that evaluation mode is not an identity"
    g = torch.Generator().manual_seed(0)
    for mod in m.modules():
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.copy_(torch.rand(mod.num_features, generator=g) * .2 - .1)
            mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + .5)
            if mod.affine: mod.weight.data.uniform_(.5, 1.5); mod.bias.data.uniform_(-.1, .1)
    return m

def assert_exact(model, net, sizes):
    for shape in sizes:
        x = torch.randn(*shape, generator=torch.Generator().manual_seed(2))
        assert max_abs_diff(model, net, x) < 1e-6, shape

# candidates (count, first block, its stride) and final taps of every torchvision model
TV = dict(lraspp_mobilenet_v3_large=(15, 'backbone.1', 2, [3, 14]), deeplabv3_mobilenet_v3_large=(15, 'backbone.1', 2, None),
          deeplabv3_resnet50=(16, 'backbone.layer1.0', 4, None), deeplabv3_resnet101=(33, 'backbone.layer1.0', 4, None),
          fcn_resnet50=(16, 'backbone.layer1.0', 4, None), fcn_resnet101=(33, 'backbone.layer1.0', 4, None))

@pytest.mark.parametrize('name', TV_SEG_ARCHS)
def test_torchvision_exact(name):
    torch.manual_seed(0)
    kw = dict(weights=None, weights_backbone=None, num_classes=7) | ({} if name.startswith('lraspp') else dict(aux_loss=False))
    m = random_bn(getattr(SEG, name)(**kw))
    net = MESSNet.from_model(m)
    assert_exact(m, net, [(1, 3, 97, 131), (2, 3, 120, 160)])
    n, first, stride, taps = TV[name]
    assert (len(net.candidates), net.candidates[0].name, net.candidates[0].stride, net.final_taps) == (n, first, stride, taps)
    assert net.config['arch'] == f'tv:{name}' and net.n_classes == 7
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in m.parameters())   # nothing left out, nothing copied

try: import segmentation_models_pytorch as smp
except ImportError: smp = None
needs_smp = pytest.mark.skipif(smp is None, reason="segmentation_models_pytorch is not installed (pip install 'mess_fast[smp]')")
SMP_MAIN = ['Unet', 'FPN', 'DeepLabV3Plus', 'Linknet', 'PSPNet']
SMP_CASES = [(a, e) for e in ('resnet18', 'mobilenet_v2', 'efficientnet-b0', 'tu-resnet18') for a in SMP_MAIN] + \
            [(a, 'resnet18') for a in SMP_ARCHS if a not in SMP_MAIN]
N_CAND = {'resnet18': 9, 'tu-resnet18': 9, 'mobilenet_v2': 17, 'efficientnet-b0': 17}

@needs_smp
@pytest.mark.parametrize('arch,enc', SMP_CASES)
def test_smp_exact(arch, enc):
    torch.manual_seed(0)
    m = random_bn(getattr(smp, arch)(encoder_name=enc, encoder_weights=None, classes=5))
    net = MESSNet.from_model(m)
    assert net.config['arch'] == f'smp:{arch}:{enc}'
    assert_exact(m, net, [(1, 3, 128, 128), (2, 3, 128, 160)] + ([(1, 3, 97, 131)] if net.input_multiple == 1 else []))
    # PSPNet reads the first three stages only: the deeper blocks are not candidates (they never run)
    assert len(net.candidates) == ({'resnet18': 5, 'tu-resnet18': 5}.get(enc, 6) if arch == 'PSPNet' else N_CAND[enc])
    assert net.final_taps[0] == -1 and net.final_taps[-1] == len(net.candidates) - 1
    assert net.exit_stride(FINAL) == 1

@needs_smp
@pytest.mark.parametrize('mk', [lambda: SEG.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5),
                                lambda: smp.FPN('efficientnet-b0', encoder_weights=None, classes=5)])
def test_train_mode_exact(mk):
    "In training mode too (BatchNorm batch statistics, dropout and drop-connect with the same seed), with the same statistics updates"
    import copy
    torch.manual_seed(0); m1 = mk(); m2 = copy.deepcopy(m1)
    net = MESSNet.from_model(m2); m1.train(); net.train()
    x = torch.randn(2, 3, 96, 128)
    torch.manual_seed(1); a = m1(x); a = a['out'] if isinstance(a, dict) else a
    torch.manual_seed(1); b = net(x)[FINAL]
    assert torch.equal(a, b)
    sd1, sd2 = m1.state_dict(), m2.state_dict()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)

@needs_smp
def test_names_build_and_rebuild(tmp_path):
    for arch in ('tv:lraspp_mobilenet_v3_large', 'smp:Unet:resnet18'):
        net = MESSNet(arch, n_classes=12, exits=['2:fcn-b0']).eval()
        assert net.config['arch'] == arch and net.exit_keys == ['2:fcn-b0', FINAL]
        net2 = MESSNet.load(net.save(tmp_path/f"{arch.replace(':', '_')}.pth")).eval()
        x = torch.randn(1, 3, 64, 96)
        with torch.no_grad(): a, b = net(x), net2(x)
        assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="Unknown smp encoder 'nope'"): MESSNet('smp:Unet:nope')
    with pytest.raises(ValueError, match="Unknown torchvision model 'tv:deeplabv3'"): MESSNet('tv:deeplabv3')

def test_converted_network_loads_in_a_fresh_process(tmp_path):
    "A saved conversion loads where only `from mess_fast.model import MESSNet` ran: its family ('tv:') is imported on first use"
    m = random_bn(SEG.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=5))
    net = MESSNet.from_model(m, exits=['2:fcn-b0', '6:aspp-crm-b0']).eval()
    p = net.save(tmp_path/'lraspp.pth')
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    torch.save(x, tmp_path/'x.pt')
    with torch.no_grad(): want = net(x)
    code = ("import sys, json, torch\n"
            "from mess_fast.model import MESSNet\n"
            "before = sorted(m for m in sys.modules if m.startswith('mess_fast.'))\n"
            "net = MESSNet.load(sys.argv[1]).eval()\n"
            "with torch.no_grad(): out = net(torch.load(sys.argv[2]))\n"
            "torch.save(out, sys.argv[3])\n"
            "print(json.dumps(dict(arch=net.config['arch'], exits=net.exit_keys, before=before)))")
    env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'} | dict(OMP_NUM_THREADS=str(torch.get_num_threads()))   # the same kernels
    r = subprocess.run([sys.executable, '-c', code, str(p), str(tmp_path/'x.pt'), str(tmp_path/'out.pt')], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res['arch'] == 'tv:lraspp_mobilenet_v3_large' and res['exits'] == ['2:fcn-b0', '6:aspp-crm-b0', FINAL]
    assert 'mess_fast.convert' not in res['before']                       # not imported by mess_fast.model itself
    out = torch.load(tmp_path/'out.pt')
    assert list(out) == list(want)
    for k in want: assert torch.equal(out[k], want[k]), (k, (out[k] - want[k]).abs().max())

@needs_smp
def test_model_kwargs_and_aux_heads(tmp_path):
    "Constructor arguments are recovered and rebuild the model; auxiliary heads are left out"
    m = random_bn(smp.DeepLabV3Plus('resnet18', encoder_weights=None, classes=4, encoder_output_stride=8, decoder_channels=64))
    net = MESSNet.from_model(m)
    assert net.config['model_kwargs'] == dict(encoder_output_stride=8, decoder_channels=64)
    net2 = MESSNet.load(net.save(tmp_path/'d.pth'))
    assert_exact(m, net2, [(1, 3, 64, 96)])
    a = random_bn(SEG.fcn_resnet50(weights=None, weights_backbone=None, num_classes=4, aux_loss=True))
    na = MESSNet.from_model(a)
    assert na.config['arch'] == 'tv:fcn_resnet50' and not any('aux' in k for k in na.state_dict())
    b = smp.Unet('resnet18', encoder_weights=None, classes=4, aux_params=dict(classes=3))
    assert MESSNet.from_model(b).config['arch'] == 'smp:Unet:resnet18'

def test_model_that_cannot_be_named(tmp_path):
    "A modified model converts exactly; loading its checkpoint asks for the model"
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead
    m = SEG.fcn_resnet50(weights=None, weights_backbone=None, num_classes=4, aux_loss=False)
    m.classifier = DeepLabHead(2048, 4)
    net = MESSNet.from_model(m)
    assert net.config['arch'] == 'model:FCN'
    p = net.save(tmp_path/'m.pth')
    with pytest.raises(ValueError, match=r"cannot rebuild by name: rebuild it with MESSNet.from_model\(your_model\), then net.load_weights"):
        MESSNet.load(p)
    MESSNet.from_model(m).load_weights(p)

@needs_smp
@pytest.mark.parametrize('mk,msg', [
    (lambda: nn.Sequential(nn.Conv2d(3, 4, 1)), "Cannot convert a Sequential: MESSNet.from_model takes a torchvision segmentation model"),
    (lambda: torchvision.models.resnet18(), "Cannot convert a ResNet"),
    (lambda: smp.Unet('resnet18', encoder_weights=None, classes=4, activation='softmax2d'), "applies Softmax; MESS needs logits"),
    (lambda: smp.Unet('resnet18', encoder_weights=None, classes=4, in_channels=1), "takes 1 input channels"),
    (lambda: smp.Segformer('mit_b0', encoder_weights=None, classes=4), "is not a chain of its children"),
    (lambda: smp.Unet('tu-convnext_atto', encoder_weights=None, classes=4), "smp pads or reorders the features"),
])
def test_unconvertible(mk, msg):
    with pytest.raises((TypeError, ValueError), match=msg): MESSNet.from_model(mk())

def test_no_blocks_named():
    m = SEG.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=4)
    with pytest.raises(ValueError, match=r"no blocks of types \('Nope',\) in the backbone"): MESSNet.from_model(m, block_types=('Nope',))

@pytest.fixture
def offline(monkeypatch, tmp_path):
    "No network at all, empty weight caches"
    import huggingface_hub.constants as hfc
    monkeypatch.setenv('TORCH_HOME', str(tmp_path/'torch'))
    monkeypatch.setattr(hfc, 'HF_HUB_CACHE', str(tmp_path/'hf'))
    for v in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy'): monkeypatch.delenv(v, raising=False)
    def no_net(*a, **k): raise OSError('network is unreachable (simulated)')
    monkeypatch.setattr(socket, 'create_connection', no_net)
    monkeypatch.setattr(socket, 'getaddrinfo', no_net)

@needs_smp
@pytest.mark.parametrize('arch,what', [('tv:lraspp_mobilenet_v3_large', 'backbone weights'), ('smp:Unet:resnet18', "encoder weights 'imagenet'")])
def test_pretrained_offline_fails_fast(offline, arch, what):
    t = time.time()
    with pytest.raises(RuntimeError, match=f"Could not get the pretrained {what} for '{arch}'.*pretrained=False"):
        MESSNet(arch, n_classes=12, pretrained=True)
    assert time.time() - t < 10

# --- the whole pipeline on one model of each family ------------------------------------------------------

@pytest.fixture(scope='module')
def dls(tiny_dls): return tiny_dls

def spread_policy(net, full, exits, n):
    "Per-exit thresholds at batch medians, so that images leave at several exits"
    tp = {k: float(pixel_confidence(full[k]).median()) for k in exits}
    ti, rest = {}, torch.arange(n)
    for k in exits:
        if len(rest) == 0: ti[k] = 1.; continue
        ic = ExitPolicy(tp, at='full')(full[k][rest], k, net.exit_stride(k))[1]
        ti[k] = float(ic.sort().values[len(ic) // 2]); rest = rest[ic < ti[k]]
    return ExitPolicy(tp, ti, at='full')

@pytest.mark.parametrize('family', ['tv', pytest.param('smp', marks=needs_smp)])
def test_mess_pipeline(dls, family, tmp_path):
    torch.manual_seed(0)
    model = (SEG.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=dls.c) if family == 'tv'
             else smp.Unet('resnet18', encoder_weights=None, classes=dls.c))
    learn = mess_learner(dls, model=model, seed=0)
    net = learn.model
    learn.fit_stage1(1, 1e-3)
    pos = [1, 4] if family == 'tv' else [2, 5]
    learn.to_stage2(['fcn-b0', 'fcn-crm-b1-rdi'], positions=pos)
    # stage 2 leaves the user's model (whose modules the network shares) bitwise unchanged
    sd0 = {k: v.clone() for k, v in model.state_dict().items()}
    x = learn.dls.one_batch()[0].as_subclass(torch.Tensor)
    learn.fit_stage2(1, 1e-2)
    sd1 = model.state_dict()
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0)
    assert max_abs_diff(model, net, x) == 0
    tab = learn.exit_table()
    assert list(tab.index) == net.exit_keys and tab.loc[FINAL, 'rel_cost'] == 1

    # the predictor: images leave at several exits, each answer equals a full forward at the exit taken
    net.eval()
    xb = torch.cat([x, x.flip(-1)])
    with torch.no_grad(): full = net(xb)
    exits = list(net.heads)[::2]
    pred = EarlyExitPredictor(net, exits, spread_policy(net, full, exits, len(xb)))
    r = pred.predict_batch(xb, logits=True)
    assert len(set(r['exits'])) >= 2, r['exits']
    for i, k in enumerate(r['exits']):
        torch.testing.assert_close(r['logits'][i], full[k][i], atol=1e-4, rtol=1e-4)
    for k in net.exit_keys:
        b = EarlyExitPredictor(net, budget=k).predict_batch(xb, logits=True)
        torch.testing.assert_close(b['logits'], full[k], atol=1e-5, rtol=1e-5)

    # profile, cache, search: the search's numbers are the predictor's
    prof = profile_net(net, (64, 96), reps=2, warmup=1, progress=False)
    assert set(prof.table.key) >= set(net.exit_keys)
    cal = dls.valid
    cache = build_cache(net, cal, progress=False)
    sr = search(cache, prof, max_exits=2, progress=False)
    f = sr.fronts['latency']
    cfgs = list(sr.targets().config) + [f[i] for i in np.linspace(0, len(f) - 1, min(4, len(f))).round().astype(int)]
    for c in cfgs:
        ev = c.predictor(net, cache.base_policy()).evaluate(cal)
        res = sr.evaluate(c)
        assert res['hist'] == ev['hist'] and np.array_equal(res['cm'], ev['cm'].numpy()), c.name

    # deploy (a pruned copy), save and load
    c = next((c for c in cfgs if c.exits), ExitConfig(exits=[exits[0]], th_pix=[.5], th_img=[.5]))
    dep = sr.deploy(c, net, tmp_path/'deployed.pth')
    assert list(dep.net.heads) == list(c.exits)
    a, b = dep.predict_batch(xb), c.predictor(net, cache.base_policy()).predict_batch(xb)
    assert a['exits'] == b['exits'] and torch.equal(a['masks'], b['masks'])
    net2 = MESSNet.load(net.save(tmp_path/'net.pth')).eval()
    with torch.no_grad(): o2 = net2(xb)
    assert all(torch.equal(o2[k], full[k]) for k in full)
    with torch.no_grad():   # the walk carries the taps; the final exit reads them
        f0 = net.run_segments(xb, 0, pos[0])
        assert isinstance(f0, Tapped) and torch.equal(net.exit_logits(FINAL, net.run_segments(f0, pos[0] + 1)), net.truncate(FINAL, native=True)(xb))
