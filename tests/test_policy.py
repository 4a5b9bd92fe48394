"""The exit rule, written once: pixel confidence in float64, the edge correction (eager and exportable paths give the same map),
confident-pixel counts, the float32 image confidence and leave decision for numpy and torch alike, the global offset, settings."""
import json, math
import numpy as np, pytest, torch
from mess_fast.policy import *

# ---------------------------------------------------------------- confidence maps
def test_pixel_confidence_in_float64():
    g = torch.Generator().manual_seed(5)
    lg = torch.randn(2, 12, 9, 11, generator=g) * 8
    c = pixel_confidence(lg)
    assert c.dtype == torch.float32 and torch.equal(c, lg.double().softmax(1).amax(1).float())
    p = lg.double().softmax(1)
    e = pixel_confidence(lg, 'entropy')
    assert e.dtype == torch.float32 and torch.equal(e, (1 - torch.special.entr(p).sum(1) / math.log(12)).float())
    assert torch.allclose(e.double(), 1 + (p * p.log()).nansum(1) / math.log(12), atol=1e-7)
    assert torch.equal(pixel_confidence(lg.half().float()), pixel_confidence(lg.half()))   # any input dtype: float64 inside
    with pytest.raises(ValueError, match='confidence kind'): pixel_confidence(lg, 'margin')

def test_window_median_full_vs_bruteforce():
    c = torch.rand(1, 20, 24, generator=torch.Generator().manual_seed(3)); m = torch.zeros_like(c, dtype=torch.bool); m[0, ::3, ::5] = True
    res = window_median(c, m, 9, chunk=100)
    for _, i, j in m.nonzero().tolist():
        assert res[0, i, j] == c[0, max(0, i-4):i+5, max(0, j-4):j+5].flatten().median()
    assert torch.equal(res[~m], c[~m])
    every = window_median_all(c, 9)                                   # the exportable path: every pixel's window
    assert torch.equal(every[m], res[m])

def test_label_edges():
    lab = torch.zeros(1, 7, 9, dtype=torch.long); lab[0, :, 5:] = 1
    e = label_edges(lab)
    assert e[0].nonzero()[:, 1].unique().tolist() == [4, 5]           # the pixels on both sides of the boundary
    assert label_edges(lab, 3)[0].nonzero()[:, 1].unique().tolist() == [3, 4, 5, 6]
    assert not label_edges(torch.zeros(2, 5, 5, dtype=torch.long)).any()
    for bad in (2, 0, 1.):
        with pytest.raises(ValueError, match='odd int'): label_edges(lab, bad)

@pytest.mark.parametrize('kw', [dict(), dict(kind='entropy'), dict(edge=False), dict(s=1, k=3), dict(s=5, k=7)])
def test_confidence_map_exportable_equals_eager(kw):
    "The exportable operations (what the ONNX graphs run) give the eager map bitwise, ties between classes included"
    g = torch.Generator().manual_seed(7)
    for lg in (torch.randn(3, 6, 13, 17, generator=g) * 3, torch.randint(0, 3, (2, 4, 9, 10), generator=g).float()):
        args = (kw.get('kind', 'top1'), kw.get('edge', True), kw.get('s', 3), kw.get('k', 5))
        (ce, le), (cx, lx) = confidence_map(lg, *args), confidence_map(lg, *args, exportable=True)
        assert torch.equal(le, lg.argmax(1)) and torch.equal(le, lx) and torch.equal(ce, cx)
        if args[1]: assert not torch.equal(ce, pixel_confidence(lg, args[0]))   # the edges were corrected

# ---------------------------------------------------------------- counts, image confidence, the leave decision
@pytest.mark.parametrize('kw', [dict(), dict(edge=False), dict(exclude=3), dict(at='full', kind='entropy')])
def test_policy_counts(kw):
    g = torch.Generator().manual_seed(6)
    lg = torch.randn(3, 5, 12, 16, generator=g) * 3
    pol = ExitPolicy(0.6, 0.5, **kw)
    ths = [0.3, 0.6, 0.9]
    ok, n = pol.counts(lg, ths, stride=4)
    conf, labels = confidence_map(lg, pol.kind, pol.edge, pol.s, pol.window_for(4))
    keep = labels != kw['exclude'] if 'exclude' in kw else torch.ones_like(labels, dtype=torch.bool)
    for j, t in enumerate(ths):
        assert torch.equal(ok[:, j], ((conf >= torch.tensor(t, dtype=torch.float32)) & keep).sum((1, 2)))
    assert torch.equal(n, keep.sum((1, 2))) and ok.dtype == n.dtype == torch.int64
    assert torch.equal(confident_mask(conf, ths).sum((2, 3)), (conf[:, None] >= torch.tensor(ths)[None, :, None, None]).sum((2, 3)))
    assert all(torch.equal(a, b) for a, b in zip(pol.counts(lg, ths, 4, exportable=True), (ok, n)))
    leave, ic = pol(lg, 'any', 4)
    assert ic.dtype == torch.float32 and torch.equal(ic, ok[:, 1].float() / n.float())
    assert torch.equal(leave, ic >= torch.tensor(0.5, dtype=torch.float32))
    l2, c2 = pol.decide(ok[:, 1].numpy(), n.numpy(), 'any')          # numpy in, numpy out: the same decision
    assert isinstance(c2, np.ndarray) and np.array_equal(c2, ic.numpy()) and np.array_equal(l2, leave.numpy())

def test_image_confidence_and_leaves_numpy_torch():
    "One float32 division, one float32 comparison, for numpy (the cache, the runtime) and torch (the predictor) alike"
    rng = np.random.default_rng(0)
    ok, n = rng.integers(0, 301, 500), np.full(500, 300)
    ok[:5] = [270, 269, 0, 300, 90]
    cn, ct = image_confidence(ok, n), image_confidence(torch.from_numpy(ok), torch.from_numpy(n))
    assert cn.dtype == np.float32 and ct.dtype == torch.float32 and np.array_equal(cn, ct.numpy())
    assert np.array_equal(cn, ok.astype(np.float32) / n.astype(np.float32))
    assert image_confidence(np.array([0]), np.array([0]))[0] == 0   # nothing counted
    grid = [round(0.05 * i, 2) for i in range(21)] + [1 / 3, 0.9]
    for t in grid:
        for off in (0., 0.05, -0.1):
            a, b = leaves(cn, t, off), leaves(ct, t, off)
            assert np.array_equal(a, b.numpy()) and np.array_equal(a, cn >= np.float32(t + off)), (t, off)
    assert leaves(cn, 0.9)[:2].tolist() == [True, False]              # 270/300 reaches 0.9, 269/300 does not
    assert threshold32(0.8, 0.1) == np.float32(0.8 + 0.1) and threshold32(0.8).dtype == np.float32
    th = sorted(grid)
    r = reached(cn, th)
    for j, t in enumerate(th): assert np.array_equal(j < r, leaves(cn, t)), t   # leaves at grid index j iff j < reached
    assert np.array_equal(reached(cn, th, 0.05) > 3, leaves(cn, th[3], 0.05))

def test_policy_decide_and_offset():
    pol = ExitPolicy({'1:fcn-b0': 0.7, '3:fcn-b0': 0.8}, {'1:fcn-b0': 0.6, '3:fcn-b0': 0.5})
    ok, n = np.array([60, 59, 70]), np.array([100, 100, 100])
    assert pol.decide(ok, n, '1:fcn-b0')[0].tolist() == [True, False, True]
    up = pol.with_offset(0.1)
    assert up.offset == 0.1 and up.thresholds('1:fcn-b0') == pol.thresholds('1:fcn-b0') and pol.offset == 0
    assert up.decide(ok, n, '1:fcn-b0')[0].tolist() == [False, False, True]
    assert pol.with_offset(-0.2).decide(ok, n, '3:fcn-b0')[0].tolist() == [True, True, True]
    assert ExitPolicy(**up.to_dict()) == up != pol
    for bad in (float('nan'), float('inf'), 'x'):
        with pytest.raises(ValueError, match='offset must be a finite number'): ExitPolicy(offset=bad)

# ---------------------------------------------------------------- settings
@pytest.mark.parametrize('bad', [dict(th_img=1.01), dict(th_pix=-0.5), dict(th_pix={'0:fcn-b0': 2}), dict(th_img='x')])
def test_thresholds_rejected(bad):
    with pytest.raises(ValueError, match='must be a number in'): ExitPolicy(**bad)

def test_policy_to_dict_and_thresholds():
    pol = ExitPolicy({'0:fcn-b0': 0.7, '2:aspp-crm-b0': 0.8}, 0.6, edge=False, s=5, window=7, kind='entropy', at='full', exclude=11)
    d = pol.to_dict()
    assert ExitPolicy(**json.loads(json.dumps(d))) == pol and ExitPolicy(**d) != ExitPolicy()
    assert pol.thresholds('0:fcn-b0') == (0.7, 0.6) and pol.thresholds('9:fcn-b0') == (0.8, 0.6)   # unknown exit: the strictest
    assert pol.window_for(16) == 7 and ExitPolicy().window_for(16) == 5 and ExitPolicy(at='full').window_for(4) == 17
    for bad in [dict(kind='x'), dict(at='half'), dict(window=4), dict(s=2)]:
        with pytest.raises(ValueError): ExitPolicy(**bad)

def test_exit_costs_in_integer_units():
    c = ExitCosts('latency', leave={'1:a': 2.1234567}, visit={'1:a': 0.3333333}, final=10.0000004, budget={'1:a': 2., 'final': 10.})
    assert c.units(2.1234567) == 2_123_457 and COST_SCALE == dict(latency=1e6, flops=1e9)
    assert c.chain_units(['1:a']) == [2_123_457, 333_333 + 10_000_000]
    assert c.total_units(['1:a'], {'1:a': 2, 'final': 1}) == 2 * 2_123_457 + 10_333_333
    assert c.mean(['1:a'], {'1:a': 2, 'final': 1}) == (2 * 2_123_457 + 10_333_333) / 3 / 1e6
    assert ExitCosts(**c.to_dict()) == c
    with pytest.raises(ValueError, match='no image'): c.mean(['1:a'], {'final': 0})
    with pytest.raises(ValueError, match='cost kind'): ExitCosts('energy', {}, {}, 0., {})

def test_policy_module_imports_without_torch():
    "mess_fast.policy (the ONNX runtime's rule too) imports where torch cannot"
    import subprocess, sys
    code = ("import sys; sys.modules['torch'] = None; import numpy as np, mess_fast.policy as p\n"
            "print(p.ExitPolicy().decide(np.array([3]), np.array([4]), 'x'))")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
