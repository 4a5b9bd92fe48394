"Model invariants that are too broad for the notebook: every backbone x every head, odd sizes, the per-exit API, the exit walk, save/load, timm, offline."
import dataclasses, fractions, socket, time
import numpy as np, pytest, torch
from mess_fast.core import FINAL, MESSDefaults, defaults, plain, confusion, miou, check_new_file, atomic_write
from mess_fast.backbones import TV_ARCHS, body_of, default_output_stride, reachable, _timm_cached
from mess_fast.heads import HeadConfig, ExitHead, head_grid
from mess_fast.model import (MESSNet, ExitWalk, SingleExitNet, upsample, class_argmax, count_flops, n_params, read_checkpoint,
                             state_sha256)
from mess_fast.fixtures import tiny_net

SIZES = [(180, 240), (97, 131)]

@pytest.mark.parametrize('arch', TV_ARCHS)
def test_every_head_every_backbone_is_input_sized(arch):
    "Every head config at an early and a middle candidate gives logits at the input size, for odd sizes too."
    torch.manual_seed(0)
    probe = MESSNet(arch, n_classes=3)
    mid = len(probe.candidates) // 2
    net = MESSNet(arch, n_classes=3, exits=[(p, c) for p in (0, mid) for c in head_grid()]).eval()
    assert len(net.heads) == 40
    for size in SIZES:
        with torch.no_grad(): out = net(torch.randn(1, 3, *size))
        assert list(out) == net.exit_keys
        for k, v in out.items(): assert tuple(v.shape) == (1, 3, *size), (arch, k, size)

def test_candidate_counts():
    "Candidates are discovered from the blocks: 8 in ResNet-18, 16 in ResNet-50, one per inverted residual in MobileNets."
    counts = {a: len(MESSNet(a).candidates) for a in TV_ARCHS}
    assert counts == dict(resnet18=8, resnet34=16, resnet50=16, resnet101=33, mobilenet_v2=17, mobilenet_v3_large=15)

@pytest.mark.parametrize('os_,strides', [(8, [4,4,8,8,8,8,8,8]), (16, [4,4,8,8,16,16,16,16]), (32, [4,4,8,8,16,16,32,32])])
def test_output_stride(os_, strides):
    assert [c.stride for c in MESSNet('resnet18', output_stride=os_).candidates] == strides

def test_bad_output_stride():
    with pytest.raises(ValueError, match='output_stride must be 8, 16, 32 or None, got 4'): MESSNet('resnet18', output_stride=4)

def test_exits_never_change_final_bitwise():
    torch.manual_seed(1)
    net = MESSNet('mobilenet_v2', n_classes=4).eval()
    x = torch.randn(2, 3, 97, 131)
    with torch.no_grad():
        ref = net(x)['final']
        keys = [net.add_exit(p, c) for p in (0, 5, 16) for c in ('fcn-b0', 'aspp-crm-b2-rdi')]
        assert torch.equal(net(x)['final'], ref)
        for k in keys[::2]: net.remove_exit(k)
        assert torch.equal(net(x)['final'], ref)
        assert torch.equal(net.forward_exit(x, 'final'), ref)

def test_save_load_identical_and_mismatch_named(tmp_path):
    net = tiny_net(['1:fcn-crm-b1', '6:aspp-b0'], n_classes=5, output_stride=16, seed=2)   # random BN statistics: a missed buffer would show
    x = torch.randn(1, 3, 97, 131)
    p = net.save(tmp_path/'m.pth')
    with pytest.raises(FileExistsError, match='m.pth exists'): net.save(p)
    net2 = MESSNet.load(p).eval()
    assert net2.full_config() == net.full_config()
    with torch.no_grad():
        a, b = net(x), net2(x)
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = MESSNet('resnet18', n_classes=5, output_stride=8, exits=['1:fcn-crm-b1', '6:aspp-b0'])
    with pytest.raises(ValueError, match=r"output_stride: 16 vs 8"): other.load_weights(p)
    other = MESSNet('resnet34', n_classes=7, output_stride=16)
    with pytest.raises(ValueError, match=r"arch: 'resnet18' vs 'resnet34'.*n_classes: 5 vs 7"): other.load_weights(p)

def test_load_rejects_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match='No MESSNet checkpoint at'): MESSNet.load(tmp_path/'nope.pth')
    torch.save({'a': torch.zeros(1)}, tmp_path/'sd.pth')
    with pytest.raises(ValueError, match='sd.pth is not a MESSNet checkpoint'): MESSNet.load(tmp_path/'sd.pth')
    torch.save({'obj': fractions.Fraction(1, 3)}, tmp_path/'pickled.pth')   # what learn.export writes: Python objects
    with pytest.raises(ValueError, match="pickled.pth is not a MESSNet checkpoint: it holds pickled Python objects"): MESSNet.load(tmp_path/'pickled.pth')

def test_load_names_an_unreadable_file(tmp_path):
    (tmp_path/'junk.pth').write_text('not a checkpoint')
    with pytest.raises(ValueError, match='junk.pth is not a readable MESSNet checkpoint'): MESSNet.load(tmp_path/'junk.pth')

def test_checkpoint_checksum(tmp_path):
    "A checkpoint carries the SHA-256 of its weights: altered weights are refused by name; one saved without a checksum still loads"
    net = tiny_net(['1:fcn-b0'], n_classes=3)
    p = net.save(tmp_path/'m.pth')
    ck = read_checkpoint(p)
    assert ck['sha256'] == state_sha256(net.state_dict()) == state_sha256(MESSNet.load(p).state_dict())
    assert state_sha256(tiny_net(['1:fcn-b0'], n_classes=3, seed=1).state_dict()) != ck['sha256']
    k = next(k for k in ck['state_dict'] if k.endswith('running_mean'))
    ck['state_dict'][k][0] += 1.
    torch.save(ck, tmp_path/'altered.pth')
    with pytest.raises(ValueError, match=r'altered.pth: its weights do not match the checksum'): MESSNet.load(tmp_path/'altered.pth')
    with pytest.raises(ValueError, match='checksum'): MESSNet('resnet18', n_classes=3, output_stride=32, exits=['1:fcn-b0']).load_weights(tmp_path/'altered.pth')
    del ck['sha256']
    torch.save(ck, tmp_path/'old.pth')                                        # written before checkpoints had one
    assert MESSNet.load(tmp_path/'old.pth').state_dict()[k][0] == net.state_dict()[k][0] + 1

def test_cost_table_adds_up():
    "Segment FLOPs plus the final head equal the plain network's, for a ResNet and a MobileNet."
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead
    for arch, kw in [('resnet50', dict(output_stride=8)), ('mobilenet_v3_large', {})]:
        net = MESSNet(arch, n_classes=12, exits=['3:fcn-b0'], **kw)
        ct = net.cost_table((97, 131))
        body = body_of(arch, output_stride=kw.get('output_stride')).eval()
        head = DeepLabHead(net.candidates[-1].channels, 12).eval()
        whole = count_flops(lambda x: head(body(x)), torch.zeros(1, 3, 97, 131))
        assert set(ct.kind) == {'segment', 'head', 'final'}
        assert list(ct.key[ct.kind == 'segment']) == [f'segment{i}' for i in range(len(net.segments))]
        assert round(ct[ct.kind != 'head'].gflops.sum() * 1e9) == whole
        assert ct.set_index('key').loc['3:fcn-b0', 'cum_gflops'] == pytest.approx(ct.cum_gflops[3] + ct.set_index('key').loc['3:fcn-b0', 'gflops'])

def test_head_names_round_trip_and_reject():
    for c in head_grid(): assert HeadConfig.from_name(c.name) == c
    for bad in ['fcn', 'fcn-b', 'deeplab-b0', 'fcn-rdi-b1', 'fcn-b0-rdi']:
        with pytest.raises(ValueError): HeadConfig.from_name(bad)

@pytest.mark.parametrize('name', ['fcn-b0', 'aspp-crm-b2-rdi'])
def test_exit_head_returns_native_logits(name):
    "Calling an `ExitHead` gives class logits at the resolution of the features it reads"
    h = ExitHead(64, 7, HeadConfig.from_name(name)).eval()
    with torch.no_grad(): out = h(torch.randn(2, 64, 11, 13))
    assert out.shape == (2, 7, 11, 13) and not hasattr(h, 'logits')

def test_timm_backbones():
    pytest.importorskip('timm')
    for a, n in [('timm:resnet18', 8), ('timm:mobilenetv3_large_100', 15)]:
        net = MESSNet(a, n_classes=3, exits=['0:fcn-b0', '2:aspp-crm-b1']).eval()
        assert len(net.candidates) == n
        with torch.no_grad(): out = net(torch.randn(1, 3, 97, 131))
        assert all(tuple(v.shape) == (1, 3, 97, 131) for v in out.values())
    assert MESSNet('timm:resnet18', output_stride=8).candidates[-1].stride == 8

@pytest.mark.parametrize('arch,os_,n', [('timm:convnext_atto', None, 12), ('timm:regnetx_002', None, None),
                                        ('timm:ghostnet_100', 32, None), ('timm:edgenext_xx_small', 32, None)])
def test_more_timm_backbones(arch, os_, n):
    "Bug 3 (user report): ConvNeXt, RegNet and GhostNet had no candidate exits ('No blocks of types ... found'); EdgeNeXt got an output_stride it does not take"
    pytest.importorskip('timm')
    probe = MESSNet(arch, n_classes=3, output_stride=os_)
    cands = probe.candidates
    assert len(cands) >= 4 and (n is None or len(cands) == n), cands
    strides = [c.stride for c in cands]
    assert strides == sorted(strides) and strides[-1] == (os_ or 16)
    mid = len(cands) // 2
    net = MESSNet(arch, n_classes=3, output_stride=os_, exits=['0:fcn-b0', f'{mid}:aspp-crm-b0']).eval()
    with torch.no_grad(): out = net(torch.randn(1, 3, 64, 96))
    assert list(out) == ['0:fcn-b0', f'{mid}:aspp-crm-b0', FINAL] and all(v.shape == (1, 3, 64, 96) for v in out.values())
    if arch == 'timm:edgenext_xx_small':                    # asking for a stride it cannot give: a clear error
        with pytest.raises(ValueError, match=r"'edgenext_xx_small' does not support output_stride=16.*output_stride=32"):
            MESSNet(arch, n_classes=3, output_stride=16)

def test_pretrained_offline_fails_fast(monkeypatch, tmp_path):
    "Without a network the weights download fails within seconds with a message that says what to do."
    monkeypatch.setenv('TORCH_HOME', str(tmp_path))  # empty cache: forces a download attempt
    def no_net(*a, **k): raise OSError('network is unreachable (simulated)')
    monkeypatch.setattr(socket, 'create_connection', no_net)
    monkeypatch.setattr(socket, 'getaddrinfo', no_net)
    t = time.time()
    with pytest.raises(RuntimeError, match=r"Could not get pretrained weights for 'resnet18'.*pretrained=False"):
        MESSNet('resnet18', pretrained=True)
    assert time.time() - t < 30

def test_pretrained_timm_offline_fails_fast(monkeypatch, tmp_path):
    "Bug 5 (user report): offline, `MESSNet('timm:resnet18', pretrained=True)` retried for ~50 s and ended in a raw Hugging Face Hub error"
    timm = pytest.importorskip('timm')
    import huggingface_hub.constants as hc
    for v in ('HTTPS_PROXY', 'https_proxy', 'ALL_PROXY', 'all_proxy', 'HF_HUB_OFFLINE'): monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv('HF_HOME', str(tmp_path/'hf')); monkeypatch.setenv('HF_HUB_CACHE', str(tmp_path/'hf'/'hub'))
    monkeypatch.setattr(hc, 'HF_HUB_CACHE', str(tmp_path/'hf'/'hub'), raising=False)   # read at import: the env alone is too late
    def no_net(*a, **k): raise OSError('network is unreachable (simulated)')
    monkeypatch.setattr(socket, 'create_connection', no_net)
    monkeypatch.setattr(socket, 'getaddrinfo', no_net)
    t = time.time()
    with pytest.raises(RuntimeError, match=r"Could not get pretrained weights for 'timm:resnet18'.*offline.*pretrained=False"):
        MESSNet('timm:resnet18', pretrained=True)
    assert time.time() - t < 10
    # the checks behind it
    assert not reachable('huggingface.co')
    monkeypatch.setenv('HTTPS_PROXY', 'http://proxy.invalid:3128')
    assert reachable('huggingface.co')                        # behind a proxy we cannot tell: try the download
    monkeypatch.delenv('HTTPS_PROXY')
    class _Conn:
        def close(self): pass
    monkeypatch.setattr(socket, 'create_connection', lambda *a, **k: _Conn())
    assert reachable('huggingface.co')
    m = timm.create_model('resnet18', pretrained=False, features_only=True)
    assert not _timm_cached(m)
    repo = m.pretrained_cfg['hf_hub_id']
    snap = tmp_path/'hf'/'hub'/f"models--{repo.replace('/', '--')}"
    (snap/'snapshots'/'abc123').mkdir(parents=True); (snap/'refs').mkdir()
    (snap/'refs'/'main').write_text('abc123'); (snap/'snapshots'/'abc123'/'model.safetensors').write_bytes(b'x')
    assert _timm_cached(m)                                    # cached weights: no need for the network

# ---------------------------------------------------------------- the per-exit API
@pytest.fixture(scope='module')
def net5():
    "Two exits at one position, output stride 16, random BatchNorm statistics"
    return tiny_net(['1:fcn-b0', '4:aspp-crm-b0', '4:fcn-crm-b1-rdi', '6:fcn-b1'], n_classes=5, output_stride=16, seed=3)

X = torch.randn(2, 3, 97, 131, generator=torch.Generator().manual_seed(4))

def test_exit_pos_stride_and_segments(net5):
    n = len(net5.segments)
    assert n == len(net5.candidates) == 8
    assert [net5.exit_pos(k) for k in net5.exit_keys] == [1, 4, 4, 6, n - 1]
    assert [net5.exit_stride(k) for k in net5.exit_keys] == [net5.candidates[p].stride for p in (1, 4, 4, 6, n - 1)] == [4, 16, 16, 16, 16]
    with pytest.raises(KeyError, match="'3:fcn-b0'"): net5.exit_pos('3:fcn-b0')
    with torch.no_grad():
        feats = net5.features(X)
        assert len(feats) == n
        for p in range(n):   # end is inclusive; start continues from the previous segment's output
            assert torch.equal(net5.run_segments(X, 0, p), feats[p])
            if p + 1 < n: assert torch.equal(net5.run_segments(feats[p], p + 1), feats[-1])
        assert torch.equal(net5.run_segments(X), feats[-1])
        assert torch.equal(net5.run_segments(feats[2], 3, 3), feats[3])

def test_exit_logits_native_and_forward_exit_bitwise(net5):
    with torch.no_grad():
        out, feats = net5(X), net5.features(X)
        assert list(out) == net5.exit_keys
        for k in net5.exit_keys:
            f = feats[net5.exit_pos(k)]
            nat = net5.exit_logits(k, f)
            assert nat.shape == (2, 5, *f.shape[-2:])                           # native: the features' resolution
            assert torch.equal(upsample(nat, X.shape[-2:]), out[k])
            assert torch.equal(net5.forward_exit(X, k), out[k])                 # budgeted mode = the exit of a full pass

def test_forward_exit_runs_nothing_beyond_the_exit(net5):
    ran = []
    hs = [s.register_forward_hook(lambda m, i, o, j=j: ran.append(j)) for j, s in enumerate(net5.segments)]
    hs += [h.classifier.register_forward_hook(lambda m, i, o, k=k: ran.append(k)) for k, h in net5.heads.items()]
    try:
        with torch.no_grad(): net5.forward_exit(X, '4:aspp-crm-b0')
    finally:
        for h in hs: h.remove()
    assert ran == [0, 1, 2, 3, 4, '4:aspp-crm-b0']

def test_truncate_shares_weights_and_matches(net5):
    with torch.no_grad():
        for k in net5.exit_keys:
            t = net5.truncate(k).eval()
            p = net5.exit_pos(k)
            assert isinstance(t, SingleExitNet) and len(t.segments) == p + 1 and t.key == k
            assert all(a is b for a, b in zip(t.segments, net5.segments))
            assert torch.equal(t(X), net5.forward_exit(X, k))
            nat = net5.truncate(k, native=True)(X)
            assert torch.equal(nat, net5.exit_logits(k, net5.run_segments(X, 0, p)))
        assert n_params(net5.truncate(FINAL)) == n_params(net5.segments) + n_params(net5.final_head)

def test_pruned_is_a_copy_with_only_the_kept_heads(net5):
    keys = list(net5.heads)
    small = net5.pruned(['4:aspp-crm-b0', FINAL])
    assert list(small.heads) == ['4:aspp-crm-b0'] and list(net5.heads) == keys and net5.active is None
    assert net5.pruned('6:fcn-b1').exit_keys == ['6:fcn-b1', FINAL]
    assert net5.pruned([]).exit_keys == [FINAL]
    small.eval()
    with torch.no_grad():
        for k in small.exit_keys: assert torch.equal(small.forward_exit(X, k), net5.forward_exit(X, k))
        next(small.parameters()).add_(1.)                                   # a deep copy: the original is untouched
        assert not torch.equal(next(small.parameters()), next(net5.parameters()))
    with pytest.raises(KeyError, match="'2:fcn-b0'"): net5.pruned(['2:fcn-b0'])

def test_pruned_without_final_and_depth(net5, tmp_path):
    "`pruned(final=False)` keeps nothing beyond the deepest kept exit (a budgeted deployment); `depth=` builds such a network"
    cut = net5.pruned(['1:fcn-b0', '4:aspp-crm-b0'], final=False)
    assert cut.exit_keys == ['1:fcn-b0', '4:aspp-crm-b0'] and len(cut.segments) == 5 and cut.final_head is None
    assert net5.exit_keys[-1] == FINAL and len(net5.segments) == 8 and net5.final_head is not None   # the original is whole
    assert n_params(cut) == n_params(net5.segments[:5]) + n_params(net5.heads['1:fcn-b0']) + n_params(net5.heads['4:aspp-crm-b0'])
    with torch.no_grad():
        for k in cut.exit_keys: assert torch.equal(cut.forward_exit(X, k), net5.forward_exit(X, k))
        assert list(cut(X)) == cut.exit_keys
    with pytest.raises(KeyError, match='no final exit'): cut.exit_pos(FINAL)
    with pytest.raises(ValueError, match='at least one exit'): net5.pruned([], final=False)
    back = MESSNet.load(cut.save(tmp_path/'cut.pth')).eval()
    assert back.exit_keys == cut.exit_keys and len(back.segments) == 5 and back.config['depth'] == 4
    with torch.no_grad(): assert torch.equal(back.forward_exit(X, '4:aspp-crm-b0'), cut.forward_exit(X, '4:aspp-crm-b0'))
    d = MESSNet('resnet18', n_classes=5, output_stride=16, exits=['1:fcn-b0'], depth=3)
    assert d.exit_keys == ['1:fcn-b0'] and len(d.segments) == 4 and len(d.candidates) == 8
    with pytest.raises(ValueError, match='out of range'): d.add_exit(5)
    for bad in (8, -1, 2.):
        with pytest.raises(ValueError, match='depth must be'): MESSNet('resnet18', depth=bad)

def _segment_calls(net):
    calls = []
    hs = [s.register_forward_hook(lambda m, i, o, j=j: calls.append((j, i[0].shape[0]))) for j, s in enumerate(net.segments)]
    return calls, hs

def test_exit_walk(net5):
    "The one walk: the exits asked for in depth order, each segment run once, nothing beyond the last; `keep` shrinks the batch"
    x = torch.randn(5, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        feats = net5.features(x)
        walk = net5.exit_walk(x, [FINAL, '4:fcn-crm-b1-rdi', '1:fcn-b0'])     # any order in, depth order out
        assert isinstance(walk, ExitWalk) and walk.keys == ['1:fcn-b0', '4:fcn-crm-b1-rdi', FINAL]
        assert walk.plan() == [(0, 1, ['1:fcn-b0']), (2, 4, ['4:fcn-crm-b1-rdi']), (5, 7, [FINAL])]
        calls, hs = _segment_calls(net5)
        try: got = list(walk)
        finally:
            for h in hs: h.remove()
        assert [k for k, _ in got] == walk.keys and calls == [(j, 5) for j in range(8)]
        for k, nat in got: assert torch.equal(nat, net5.exit_logits(k, feats[net5.exit_pos(k)]))   # native logits
        assert [k for k, _ in net5.exit_walk(x)] == net5.exit_keys
        # two exits at one position share the stop; the walk ends at the last exit asked for
        walk = net5.exit_walk(x, ['4:aspp-crm-b0', '4:fcn-crm-b1-rdi'])
        assert walk.plan() == [(0, 4, ['4:aspp-crm-b0', '4:fcn-crm-b1-rdi'])]
        calls, hs = _segment_calls(net5)
        try: assert [k for k, _ in walk] == ['4:aspp-crm-b0', '4:fcn-crm-b1-rdi']
        finally:
            for h in hs: h.remove()
        assert [j for j, _ in calls] == [0, 1, 2, 3, 4]
        # keep(idx): the images still in the batch go on, with their own features
        walk, keep = net5.exit_walk(x, ['1:fcn-b0', '6:fcn-b1', FINAL]), torch.tensor([1, 4])
        calls, hs = _segment_calls(net5)
        try:
            it = iter(walk)
            k, nat = next(it)
            assert k == '1:fcn-b0' and nat.shape[0] == 5
            walk.keep(keep)
            rest = list(it)
        finally:
            for h in hs: h.remove()
        assert [k for k, _ in rest] == ['6:fcn-b1', FINAL] and all(v.shape[0] == 2 for _, v in rest)
        assert calls == [(0, 5), (1, 5)] + [(j, 2) for j in range(2, 8)]
        for k, nat in rest: torch.testing.assert_close(nat, net5.exit_logits(k, feats[net5.exit_pos(k)])[keep], atol=1e-5, rtol=1e-5)
    with pytest.raises(KeyError, match="'3:fcn-b0'"): net5.exit_walk(x, ['3:fcn-b0'])

def test_plain_upsample_argmax():
    from fastai.torch_core import TensorBase
    t = TensorBase(torch.arange(6.).reshape(2, 3))
    p = plain(t)
    assert type(p) is torch.Tensor and p.data_ptr() == t.data_ptr()
    assert plain(5) == 5 and plain(None) is None
    x = torch.randn(2, 3, 5, 7)
    assert upsample(x, (11, 13)).shape == (2, 3, 11, 13)
    assert torch.equal(upsample(x, torch.Size([5, 7])), x)                  # same size: unchanged
    g = torch.Generator().manual_seed(0)
    lg = torch.randint(0, 3, (4, 6, 9, 10), generator=g).float()            # many ties
    assert torch.equal(class_argmax(lg), lg.argmax(1))
    lg = torch.randn(2, 12, 33, 17, generator=g)
    assert torch.equal(class_argmax(lg), lg.argmax(1)) and class_argmax(lg).dtype == torch.long

def test_confusion_and_miou_vs_bruteforce():
    "torch in, torch out; numpy in, numpy out: the same matrix"
    g = torch.Generator().manual_seed(1)
    n, void = 6, 5
    pred, targ = torch.randint(0, n, (3, 8, 9), generator=g), torch.randint(0, n + 2, (3, 8, 9), generator=g)  # labels >= n are ignored
    cm = confusion(pred, targ, n, void)
    want = np.zeros((n, n), np.int64)
    for p, t in zip(pred.flatten().tolist(), targ.flatten().tolist()):
        if t < n and t != void: want[t, p] += 1
    assert cm.dtype == torch.int64 and (cm.numpy() == want).all()
    assert confusion(pred, targ, n).sum() == (targ < n).sum()
    cn = confusion(pred.numpy(), targ.numpy(), n, void)
    assert isinstance(cn, np.ndarray) and cn.dtype == np.int64 and (cn == want).all()
    assert miou(cn, void) == miou(cm, void)
    ious = [want[c, c] / (want[c].sum() + want[:, c].sum() - want[c, c]) for c in range(n) if c != void and want[c].sum() + want[:, c].sum() > 0]
    assert miou(cm, void) == pytest.approx(np.mean(ious), abs=1e-15)
    assert np.isnan(miou(torch.zeros(3, 3, dtype=torch.long)))
    assert miou(torch.tensor([[2, 0], [0, 0]])) == 1.0                      # a class absent from truth and prediction is left out
    assert miou(torch.tensor([[2, 1], [0, 0]])) == pytest.approx((2 / 3 + 0) / 2)

def test_defaults():
    assert isinstance(defaults, MESSDefaults)
    with pytest.raises(dataclasses.FrozenInstanceError): defaults.th_pix = 0.5
    assert default_output_stride('resnet50') == default_output_stride('timm:convnext_atto') == defaults.output_stride == 16
    assert default_output_stride('mobilenet_v2') is None and default_output_stride('mobilenet_v3_large') is None
    assert MESSNet('resnet18').config['output_stride'] == defaults.output_stride
    assert MESSNet('mobilenet_v2').config['final_head'] == defaults.final_head
    assert HeadConfig.from_name(defaults.stage1_head) and all(HeadConfig.from_name(h) for h in defaults.grid)
    assert list(defaults.th_img_grid) == [round(0.05 * i, 2) for i in range(21)]

@pytest.mark.parametrize('bad', [0, 1, -3, 2.0, '12'])
def test_bad_n_classes(bad):
    with pytest.raises(ValueError, match='n_classes must be an int >= 2'): MESSNet('resnet18', n_classes=bad)

def test_check_new_file_and_atomic_write(tmp_path):
    p = check_new_file(tmp_path/'a'/'b'/'f.txt')
    assert p.parent.is_dir() and not p.exists()
    p.write_text('old')
    with pytest.raises(FileExistsError, match='f.txt exists'): check_new_file(p)
    assert check_new_file(p, overwrite=True) == p
    with pytest.raises(IsADirectoryError): check_new_file(tmp_path/'a')
    def broken(tmp):
        tmp.write_text('half a fi'); raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt): atomic_write(p, broken, overwrite=True)
    assert p.read_text() == 'old' and sorted(f.name for f in p.parent.iterdir()) == ['f.txt']   # no .partial left behind
    with pytest.raises(FileExistsError): atomic_write(p, lambda tmp: tmp.write_text('new'))
    assert atomic_write(p, lambda tmp: tmp.write_text('new'), overwrite=True) == p and p.read_text() == 'new'

def test_save_meta_round_trip(tmp_path, net5):
    net = net5.pruned(['1:fcn-b0'])
    net.meta = dict(input=dict(size=[64, 96]), note='x')
    p = net.save(tmp_path/'m.pth')
    net2 = MESSNet.load(p)
    assert net2.meta == net.meta and net2.exit_keys == net.exit_keys
    q = net.save(tmp_path/'m2.pth', meta=dict(other=1))             # explicit meta replaces the network's
    assert MESSNet.load(q).meta == dict(other=1)
    p2 = MESSNet('resnet18', n_classes=3, output_stride=32).save(tmp_path/'plain.pth')
    assert MESSNet.load(p2).meta == {}
    with pytest.raises(IsADirectoryError): MESSNet.load(tmp_path)
