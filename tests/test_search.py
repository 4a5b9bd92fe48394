"""Exit search: the cache evaluates every configuration exactly as the predictor runs it (and as a brute force written here),
threshold boundaries, Pareto fronts against full enumeration (exact: integer costs, mIoU summed in one order), targets and
constraints with known answers, deployment and files. The tiny network, cache and profile are the shared ones of conftest.py."""
import itertools, json
import numpy as np, pytest, torch, torch.nn.functional as F
from mess_fast.core import FINAL
from mess_fast.heads import parse_exit_key
from mess_fast.model import MESSNet
from mess_fast.policy import ExitPolicy, COST_SCALE
from mess_fast.predict import EarlyExitPredictor
from mess_fast.cache import ExitCache, ExitConfig, CACHE_FORMAT, build_cache, flops_costs
from mess_fast.fixtures import TINY_HEADS, TINY_TH_PIX, SYNTH_KEYS, synthetic_cache, hand_profile, tiny_net
from mess_fast.chains import *
from mess_fast.search import *

HEADS, TH_PIX = TINY_HEADS, TINY_TH_PIX
VOID = 11

@pytest.fixture(scope='module')
def net(tiny_net): return tiny_net

@pytest.fixture(scope='module')
def dl(tiny_dl): return tiny_dl

@pytest.fixture(scope='module')
def cache(tiny_cache): return tiny_cache

@pytest.fixture(scope='module')
def prof(tiny_prof): return tiny_prof

# ---------------------------------------------------------------- an independent brute force
def _lower_median(v): return np.sort(v)[(len(v) - 1) // 2]      # torch's median: the lower one of an even count

def _image_conf(nat, th_pix, s=3, k=5):
    "Fraction of confident pixels of native logits `nat` (C, h, w), edge-corrected, as float32; written without the library"
    conf = torch.softmax(nat.double(), 0).amax(0).float().numpy()
    lab = nat.argmax(0).numpy()
    h, w = lab.shape
    e = np.zeros((h, w), bool)
    dh, dw = lab[1:] != lab[:-1], lab[:, 1:] != lab[:, :-1]
    e[1:] |= dh; e[:-1] |= dh; e[:, 1:] |= dw; e[:, :-1] |= dw
    r = s // 2
    grown = np.array([[e[max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].any() for j in range(w)] for i in range(h)])
    out, r = conf.copy(), k // 2
    for i, j in zip(*np.nonzero(grown)): out[i, j] = _lower_median(conf[max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].ravel())
    return [np.float32((out >= np.float32(t)).sum()) / np.float32(h * w) for t in th_pix]

def _cm(pred, targ, n=12, void=VOID):
    pred, targ = pred.ravel(), targ.ravel()
    keep = targ != void
    return np.bincount(targ[keep] * n + pred[keep], minlength=n * n).reshape(n, n)

def _miou(cm, void=VOID):
    tp = np.diag(cm).astype(float); union = cm.sum(0) + cm.sum(1) - tp
    ok = union > 0; ok[void] = False
    return float((tp[ok] / union[ok]).mean())

@pytest.fixture(scope='module')
def brute(net, dl):
    "Per image: the mask of every exit at the input size, and every head's image confidence at every pixel threshold"
    masks, confs, ys = [], [], []
    with torch.no_grad():
        for xb, yb in dl:
            for x, y in zip(xb.as_subclass(torch.Tensor), yb.as_subclass(torch.Tensor)):
                feats = net.features(x[None])
                m, c = {}, {}
                for k in HEADS + [FINAL]:
                    p = len(net.segments) - 1 if k == FINAL else parse_exit_key(k)[0]
                    nat = net.final_head(feats[p]) if k == FINAL else net.heads[k](feats[p])
                    m[k] = F.interpolate(nat, size=x.shape[-2:], mode='bilinear', align_corners=False).argmax(1)[0].numpy()
                    if k != FINAL: c[k] = dict(zip(TH_PIX, _image_conf(nat[0], TH_PIX)))
                masks.append(m); confs.append(c); ys.append(y.numpy())
    return masks, confs, ys

def brute_evaluate(brute, cfg):
    masks, confs, ys = brute
    taken = []
    for c in confs:
        if cfg.budget is not None: taken.append(cfg.budget); continue
        k = next((k for k, tp, ti in zip(cfg.exits, cfg.th_pix, cfg.th_img) if c[k][tp] >= np.float32(ti)), FINAL)
        taken.append(k)
    cm = sum(_cm(m[k], y) for m, k, y in zip(masks, taken, ys))
    return dict(exits=taken, cm=cm, miou=_miou(cm))

def random_config(cache, rng, max_exits=3):
    "A random configuration; image thresholds are often exactly a cached confidence (the boundary) or just around it"
    if rng.random() < 0.2: return ExitConfig(budget=str(rng.choice(cache.keys)))
    by_pos = {}
    for k, p in zip(cache.heads, cache.pos): by_pos.setdefault(p, []).append(k)
    ps = sorted(rng.choice(sorted(by_pos), rng.integers(1, max_exits + 1), replace=False))
    ks = [str(rng.choice(by_pos[p])) for p in ps]
    tps = [float(rng.choice(cache.th_pix)) for _ in ks]
    tis = []
    for k, tp in zip(ks, tps):
        c = float(rng.choice(cache.conf(k, tp)))
        tis.append(float(rng.choice([c, min(1., c + 1e-3), max(0., c - 1e-3), 0., 1.], p=[.5, .15, .15, .1, .1])))
    return ExitConfig(ks, tps, tis)

# ---------------------------------------------------------------- (a) exactness
def test_cache_contents(cache, net, tiny_dls):
    dls = tiny_dls
    n = len(dls.source.valid)
    assert cache.keys == HEADS + [FINAL] and cache.heads == HEADS and cache.pos == [net.exit_pos(k) for k in cache.keys]
    assert cache.th_pix == list(TH_PIX) and cache.void == VOID and cache.n_images == n and cache.n_classes == 12
    assert cache.items == [p[0].name for p in dls.source.valid]
    assert cache.counts.shape == (n, len(HEADS), 3) and cache.totals.shape == (n, len(HEADS)) and cache.cms.shape == (n, len(HEADS) + 1, 12, 12)
    assert (np.diff(cache.counts, axis=-1) <= 0).all()                        # fewer confident pixels at a higher threshold
    assert (cache.totals == [[(64 // net.exit_stride(k)) * (96 // net.exit_stride(k)) for k in HEADS]]).all()   # native maps
    rows = cache.cms.sum(-1)
    assert (rows == rows[:, :1]).all() and (rows[:, :, VOID] == 0).all()      # same labels at every exit, void left out
    assert cache.policy == ExitPolicy().to_dict() and cache.base_policy() == ExitPolicy()
    assert cache.base_policy(th_img=0.3).th_img == 0.3
    assert cache.meta['size'] == [64, 96] and cache.meta['net'] == net.full_config()
    ct = net.cost_table((64, 96)).set_index('key')
    assert cache.meta['head_gflops'] == pytest.approx({k: ct.gflops[k] for k in cache.keys})
    with pytest.raises(ValueError, match=r"th_pix=0.2 is not in this cache's grid"): cache.conf(HEADS[0], 0.2)
    # agreement with the final exit, per image and exit
    assert cache.labelled and cache.agree.shape == (n, len(HEADS) + 1) and (cache.n_pix == 64 * 96).all()
    assert (cache.agree[:, -1] == cache.n_pix).all() and (cache.agree <= cache.n_pix[:, None]).all()
    assert np.array_equal(cache.disagreement(), 1 - cache.agree / cache.n_pix[:, None])
    assert np.array_equal(cache.disagreement(HEADS[2]), cache.disagreement()[:, 2])

def test_brute_force_confidences_equal_the_cache(cache, brute):
    masks, confs, _ = brute
    for k in HEADS:
        for tp in TH_PIX: assert np.array_equal(cache.conf(k, tp), np.array([c[k][tp] for c in confs], np.float32)), (k, tp)
    for k in HEADS + [FINAL]:                                   # and the agreement of every exit's labels with the final exit's
        assert cache.agree[:, cache.keys.index(k)].tolist() == [int((m[k] == m[FINAL]).sum()) for m in masks], k

def test_label_free_cache(net, dl, tiny_dls, cache):
    "Of unlabelled frames: the final exit's prediction is the reference; the counts and agreement are those of the labelled cache"
    from mess_fast.loaders import image_test_dl
    free = build_cache(net, image_test_dl(tiny_dls, [p[0] for p in tiny_dls.source.valid]), th_pix=TH_PIX, progress=False)
    assert not free.labelled and free.void is None and free.items == cache.items
    for a in ('counts', 'totals', 'agree', 'n_pix'): assert np.array_equal(getattr(free, a), getattr(cache, a)), a
    for i, k in enumerate(free.keys):                           # against the final exit: its agreement is the confusion matrix's trace
        assert [int(np.trace(m)) for m in free.cms[:, i]] == free.agree[:, i].tolist() and free.cms[:, i].sum((1, 2)).tolist() == free.n_pix.tolist()
    assert free.evaluate(ExitConfig(budget=FINAL))['miou'] == 1.
    again = build_cache(net, dl, th_pix=TH_PIX, labelled=False, progress=False)        # labels there, but not used
    assert not again.labelled and np.array_equal(again.cms, free.cms)
    with pytest.raises(ValueError, match='labelled=True'): build_cache(net, image_test_dl(tiny_dls, [p[0] for p in tiny_dls.source.valid]), labelled=True, progress=False)

def test_cache_evaluate_equals_predictor_and_brute_force(cache, net, dl, brute):
    rng = np.random.default_rng(0)
    base = cache.base_policy()
    seen_exits, mixed = set(), 0
    for i in range(400):
        cfg = random_config(cache, rng)
        r, b = cache.evaluate(cfg), brute_evaluate(brute, cfg)
        assert r['exits'] == b['exits'], cfg
        assert np.array_equal(r['cm'], b['cm']) and abs(r['miou'] - b['miou']) <= 1e-12, cfg
        assert r['hist'] == {k: b['exits'].count(k) for k in dict.fromkeys(list(cfg.exits) + [cfg.budget or FINAL]) if k in b['exits']}
        seen_exits |= set(r['exits'])
        if i < 40:                                              # the real predictor, image by image
            ev = cfg.predictor(net, base).evaluate(dl)
            assert ev['exits'] == r['exits'] and ev['hist'] == r['hist'], cfg
            assert np.array_equal(ev['cm'].numpy(), r['cm']) and abs(ev['miou'] - r['miou']) <= 1e-12, cfg
            mixed += len(set(r['exits'])) > 1 and cfg.budget is None
    assert mixed >= 10 and len(seen_exits) >= 8                 # the configurations did split the images over many exits

def test_global_offset_exact(cache, net, dl):
    "The policy's global threshold offset moves every image threshold: the cache's exits under an offset are the predictor's"
    rng = np.random.default_rng(5)
    for i in range(40):
        cfg = random_config(cache, rng)
        if cfg.budget is not None: continue
        off = float(rng.choice([-0.1, -0.02, 0.03, 0.2]))
        shifted = ExitConfig(cfg.exits, cfg.th_pix, tuple(t + off for t in cfg.th_img))
        assert cache.taken(cfg, off) == cache.taken(shifted), (cfg, off)
        if i < 12:
            ev = EarlyExitPredictor(net, list(cfg.exits), cfg.policy(cache.base_policy()).with_offset(off)).evaluate(dl)
            r = cache.evaluate(cfg, offset=off)
            assert ev['exits'] == r['exits'] and np.array_equal(ev['cm'].numpy(), r['cm']), (cfg, off)
    assert cache.base_policy().with_offset(0.1).offset == 0.1 and cache.base_policy(offset=0.1) == cache.base_policy().with_offset(0.1)

def test_exact_with_another_policy(net, dl):
    "The cache keeps the base policy's settings (full resolution, entropy, void excluded, no dilation) and stays exact with them"
    pol = ExitPolicy(at='full', window=5, exclude=VOID, kind='entropy', s=1)
    c = build_cache(net, dl, th_pix=(0.005, 0.01, 0.02), policy=pol, progress=False)
    assert c.base_policy() == pol and (c.totals <= 64 * 96).all() and (c.totals < 64 * 96).any()   # void predictions not counted
    rng = np.random.default_rng(4)
    mixed = 0
    for _ in range(12):
        cfg = random_config(c, rng)
        r, ev = c.evaluate(cfg), cfg.predictor(net, c.base_policy()).evaluate(dl)
        assert ev['exits'] == r['exits'] and np.array_equal(ev['cm'].numpy(), r['cm']) and abs(ev['miou'] - r['miou']) <= 1e-12, cfg
        mixed += len(set(r['exits'])) > 1
    assert mixed >= 3

def test_costs_from_the_profile_and_the_cost_table(cache, prof, net):
    lat, fl = prof.costs(cache.keys), flops_costs(cache)
    ct = net.cost_table((64, 96)).set_index('key')
    for k in HEADS:
        assert lat.leave[k] == pytest.approx(prof.exit_latency(k, policy=True)) and lat.budget[k] == pytest.approx(prof.exit_latency(k))
        assert fl.leave[k] == pytest.approx(ct.cum_gflops[k]) and fl.visit[k] == pytest.approx(ct.gflops[k]) and fl.budget[k] == fl.leave[k]
    assert fl.final == pytest.approx(ct.cum_gflops[FINAL]) and lat.final == pytest.approx(prof.exit_latency(FINAL))
    rng = np.random.default_rng(1)
    for _ in range(30):                                         # the search's mean latency is the profile's latency model
        cfg = random_config(cache, rng)
        if cfg.budget is not None: continue
        r = cache.evaluate(cfg, [lat, fl])
        assert r['latency'] == pytest.approx(prof.predict_latency(list(cfg.exits), r['hist']))
    with pytest.raises(KeyError, match='no rows for exits'): prof.costs(['2:fcn-b0'])
    # costs add up in integer units (1 ns, 1 FLOP): a chain's cost is the same whatever order the images come in
    for c in (lat, fl):
        ks = ['1:fcn-b0', '4:aspp-crm-b0']
        u = c.chain_units(ks)
        assert all(isinstance(v, int) for v in u) and u[0] == c.units(c.leave['1:fcn-b0'])
        assert u[1] == c.units(c.visit['1:fcn-b0']) + c.units(c.leave['4:aspp-crm-b0'])
        assert u[2] == c.units(c.visit['1:fcn-b0']) + c.units(c.visit['4:aspp-crm-b0']) + c.units(c.final)
        assert c.chain_costs(ks) == [v / COST_SCALE[c.kind] for v in u]
        hist = {'1:fcn-b0': 3, '4:aspp-crm-b0': 1, FINAL: 5}
        assert c.total_units(ks, hist) == 3 * u[0] + u[1] + 5 * u[2] and c.mean(ks, hist) == c.total_units(ks, hist) / 9 / COST_SCALE[c.kind]
        assert c.budgeted('3:fcn-b0') == c.units(c.budget['3:fcn-b0']) / COST_SCALE[c.kind]
    with pytest.raises(ValueError, match='cost kind'): type(lat)('energy', {}, {}, 0., {})

# ---------------------------------------------------------------- (b) a confidence exactly at a threshold
def _hand_cache(counts, totals, cms, th_pix=(0.5,), key='1:fcn-b0', meta=None):
    counts, totals = np.asarray(counts), np.asarray(totals)
    n = len(counts)
    meta = meta or dict(net={}, size=[15, 20], n_candidates=8, seg_cum_gflops=[1., 2., 3., 4., 5., 6., 7., 8.],
                        head_gflops={key: 0.5, FINAL: 2.})
    return ExitCache([key, FINAL], [parse_exit_key(key)[0], 7], list(th_pix), counts.reshape(n, 1, len(th_pix)),
                     totals.reshape(n, 1), np.asarray(cms), None, ExitPolicy().to_dict(), [f'im{i}' for i in range(n)], meta)

def test_boundary_decisions_match_the_policy():
    "For every count of 300 pixels and every grid threshold (270/300 at 0.9 included), the cache leaves exactly when the policy does"
    n = 300
    ks = torch.arange(n + 1)
    lg = torch.zeros(len(ks), 2, 15, 20)                        # top-1 probability 0.5 everywhere ...
    flat = lg[:, 0].view(len(ks), -1)
    for i, k in enumerate(ks.tolist()): flat[i, :k] = 10.      # ... except k pixels that are sure
    cms = np.zeros((len(ks), 2, 2, 2), np.int64); cms[:, :, 0, 0] = n
    cache = _hand_cache(ks.numpy(), [n] * len(ks), cms)
    grid = [round(0.05 * i, 2) for i in range(21)] + [0.9, 0.1, 0.7, 1 / 3]
    for t in grid:
        leave, conf = ExitPolicy(0.6, t, edge=False)(lg, '1:fcn-b0')
        assert np.array_equal(conf.numpy(), cache.conf('1:fcn-b0', 0.5))
        taken = cache.taken(ExitConfig(('1:fcn-b0',), (0.5,), (t,)))
        assert [k == '1:fcn-b0' for k in taken] == leave.tolist(), t
    assert cache.taken(ExitConfig(('1:fcn-b0',), (0.5,), (0.9,)))[269:272] == [FINAL, '1:fcn-b0', '1:fcn-b0']
    # many pixels: the float32 ratio equals the threshold although the exact one is a hair below it
    big = np.array([89_999_999, 90_000_000, 89_999_990, 8_999_999]); tot = np.array([100_000_000, 100_000_000, 100_000_000, 10_000_000])
    c = _hand_cache(big, tot, np.zeros((4, 2, 2, 2), np.int64))
    want = (torch.from_numpy(big).float() / torch.from_numpy(tot).float() >= 0.9).tolist()   # ExitPolicy's float32 arithmetic
    assert [k != FINAL for k in c.taken(ExitConfig(('1:fcn-b0',), (0.5,), (0.9,)))] == want
    assert want[0] and not (big[0] / tot[0] >= 0.9)

def _boundary_case():
    "Images 0, 1: the early exit is right and exactly 90% sure; images 2, 3: wrong and 85% sure. The final exit is always right."
    right, wrong = np.array([[150, 0], [0, 150]]), np.array([[0, 150], [150, 0]])
    cms = np.stack([np.stack([right, right]), np.stack([right, right]), np.stack([wrong, right]), np.stack([wrong, right])])
    return _hand_cache([270, 270, 255, 255], [300] * 4, cms)

def test_search_at_the_boundary():
    cache = _boundary_case()
    res = search(cache, max_exits=1, th_img=(0.9, 0.95), progress=False)
    assert res.n_configs == 2 + 2                                # 1 exit x 2 image thresholds, + 2 budgeted
    chain = ExitConfig(('1:fcn-b0',), (0.5,), (0.9,))
    f = res.front('flops')
    assert list(f.config) == [ExitConfig(budget='1:fcn-b0'), chain]
    assert f.miou.tolist() == pytest.approx([1 / 3, 1.]) and f.gflops.tolist() == pytest.approx([2.5, (2 * 2.5 + 2 * (0.5 + 10)) / 4])
    assert res.evaluate(chain)['hist'] == {'1:fcn-b0': 2, FINAL: 2}
    assert res.pick('flops', max_drop_pp=0.1) == chain

# ---------------------------------------------------------------- (c) the fronts against full enumeration
def enumerate_configs(cache, heads, max_exits, th_pix, th_img, per_exit):
    by = sorted(heads, key=lambda k: cache.pos[cache.keys.index(k)])
    res = [ExitConfig(budget=k) for k in heads + [FINAL]]
    for m in range(1, max_exits + 1):
        for ks in itertools.combinations(by, m):
            ps = [cache.pos[cache.keys.index(k)] for k in ks]
            if len(set(ps)) < m: continue                        # one exit per position
            tps = itertools.product(th_pix, repeat=m) if per_exit else [(t,) * m for t in th_pix]
            for tp in tps:
                for ti in itertools.product(th_img, repeat=m): res.append(ExitConfig(ks, tp, ti))
    return res

def exact_points(cache, cfgs, cost, accuracy='miou'):
    "(accuracy, integer total cost over the images) of each configuration, from the cache's exact evaluation"
    idx = {k: i for i, k in enumerate(cache.keys)}
    accs, units = [], []
    for c in cfgs:
        r = cache.evaluate(c)
        accs.append(r['miou'] if accuracy == 'miou' else
                    cache.agree[np.arange(cache.n_images), [idx[k] for k in r['exits']]].sum() / cache.n_pix.sum())
        units.append(cost.units(cost.budget[c.budget]) * cache.n_images if c.budget is not None else cost.total_units(c.exits, r['hist']))
    return np.array(accs, np.float64), np.array(units, np.int64)

def check_front(acc, cost, b_acc, b_cost, cfgs):
    "The front (cheapest first) is exactly the Pareto set of the enumerated points: no tolerance, equal cost -> the more accurate one"
    assert (np.diff(cost) > 0).all() and (np.diff(acc) > 0).all()    # cheapest first and each point more accurate: none dominates another
    for a, x, c in zip(b_acc, b_cost, cfgs):                          # every configuration is matched or beaten by a front point
        assert ((cost <= x) & (acc >= a)).any(), c
    for a, x in zip(acc, cost):                                       # and no configuration beats a front point
        assert not (((b_cost <= x) & (b_acc > a)) | ((b_cost < x) & (b_acc >= a))).any(), (a, x)

def check_search_exact(cache, costs, heads, max_exits, th_pix, th_img, per_exit, accuracy='miou'):
    "Run the chain search; its fronts hold the exact numbers of their configurations and are the Pareto sets of the enumeration"
    cs = ChainSearch(cache, heads, list(th_pix), sorted(th_img), costs, max_exits, accuracy)
    fronts = cs.run(per_exit, progress=False)
    allcfg = enumerate_configs(cache, heads, max_exits, th_pix, th_img, per_exit)
    assert len(set(allcfg)) == len(allcfg) == cs.n_configs == search_space(cache, heads, max_exits, th_pix, th_img, per_exit)
    for c in costs:
        f, cfgs = cs.fronts[c.kind], fronts[c.kind]
        assert set(cfgs) <= set(allcfg) and len(cfgs) >= 3
        a, u = exact_points(cache, cfgs, c, accuracy)
        assert np.array_equal(f.cost, u) and np.array_equal(f.acc, a), c.kind   # the search's own numbers, bitwise
        assert [cs.accuracy_of(x) for x in cfgs] == a.tolist()
        check_front(a, u, *exact_points(cache, allcfg, c, accuracy), allcfg)
    return fronts, allcfg

@pytest.mark.parametrize('per_exit', [False, True])
def test_fronts_against_enumeration(cache, prof, per_exit):
    heads = ['1:fcn-b0', '1:fcn-crm-b1-rdi', '3:fcn-b0', '4:fcn-crm-b1-rdi']
    th_pix, th_img = (0.12, 0.15), (0.05, 0.1, 0.7, 0.9)
    fronts, allcfg = check_search_exact(cache, [flops_costs(cache), prof.costs(cache.keys)], heads, 3, th_pix, th_img, per_exit)
    assert len(allcfg) == (1381 if per_exit else 453)
    res = search(cache, prof, max_exits=3, th_img=th_img, th_pix=th_pix, heads=heads, per_exit_th_pix=per_exit, progress=False)
    assert res.fronts == fronts and res.n_configs == len(allcfg)
    costs = [prof.costs(cache.keys), flops_costs(cache)]
    for kind, col in (('latency', 'latency_ms'), ('flops', 'gflops')):   # the front's table: the exact evaluation
        for c, a, x in res.front(kind)[['config', 'miou', col]].itertuples(index=False):
            e = cache.evaluate(c, costs); assert e['miou'] == a and e[kind] == x

@pytest.mark.parametrize('accuracy', ['miou', 'agreement'])
@pytest.mark.parametrize('per_exit', [False, True])
def test_fronts_against_enumeration_synthetic(per_exit, accuracy):
    "Many distinct trade-offs (`synthetic_cache`, `hand_profile` with uneven heads): the fronts are exactly the Pareto points of every configuration"
    cache = synthetic_cache()
    prof = hand_profile(head_ms=dict(zip(SYNTH_KEYS, [0.3, 1.1, 0.2, 0.7, 0.4, 2.5])), policy_ms=dict(zip(SYNTH_KEYS, [0.1, 0.3, 0.2, 0.15, 0.1, 0.1])))
    th_pix, th_img = (0.5, 0.9), (0.2, 0.4, 0.6, 0.8)
    fronts, allcfg = check_search_exact(cache, [prof.costs(cache.keys), flops_costs(cache)], cache.heads, 3, th_pix, th_img, per_exit, accuracy)
    assert len(allcfg) == (2606 if per_exit else 814)
    assert all(len(f) >= 8 for f in fronts.values())
    res = search(cache, prof, max_exits=3, th_img=th_img, th_pix=th_pix, per_exit_th_pix=per_exit, accuracy=accuracy, progress=False)
    assert res.fronts == fronts and res.settings['accuracy'] == accuracy

def test_pareto_mask():
    assert pareto_mask([0.5, 0.6, 0.4, 0.6, 0.7], [1., 2., 1.5, 3., 3.]).tolist() == [True, True, False, False, True]
    assert pareto_mask([0.5, 0.5], [1., 1.]).tolist() == [True, False]                 # equal points: the first
    assert pareto_mask([], []).tolist() == []
    rng = np.random.default_rng(2)
    for _ in range(20):
        a, c = rng.integers(0, 6, 30) / 5, rng.integers(0, 6, 30) / 5
        m = pareto_mask(a, c)
        dominated = [((a >= a[i]) & (c <= c[i]) & ((a > a[i]) | (c < c[i]))).any() for i in range(30)]
        first_equal = [not ((a[:i] == a[i]) & (c[:i] == c[i])).any() for i in range(30)]
        assert m.tolist() == [not d and f for d, f in zip(dominated, first_equal)]

def test_search_space_options(cache):
    res = search(cache, max_exits=0, progress=False)
    assert res.n_configs == len(HEADS) + 1 and all(c.budget is not None for c in res.fronts['flops'])
    res = search(cache, max_exits=1, th_img=(0.5,), th_pix=(0.12,), heads=['3:fcn-b0'], progress=False)
    assert res.n_configs == 1 + 2 and 'latency' not in res.fronts
    with pytest.raises(ValueError, match=r"th_pix=0.33 is not in this cache's grid"): search(cache, th_pix=[0.33], progress=False)
    with pytest.raises(ValueError, match='th_img grid'): search(cache, th_img=(0.5, 1.5), progress=False)
    with pytest.raises(ValueError, match='max_exits'): search(cache, max_exits=-1, progress=False)
    with pytest.raises(KeyError, match="'2:fcn-b0'"): search(cache, heads=['2:fcn-b0'], progress=False)

# ---------------------------------------------------------------- (d) targets and constraints with known answers
def test_targets_and_constraints_known_answers():
    cache = _boundary_case()
    prof = hand_profile(cache.keys, cache.pos)
    lat = prof.costs(cache.keys)
    assert lat.leave == {'1:fcn-b0': pytest.approx(2 + 0.5 + 0.25 + 0.1 + 0.2 + 0.05)} and lat.visit == {'1:fcn-b0': 0.75}
    assert lat.final == pytest.approx(8 + 2 + 0.1 + 0.2 + 0.05) and lat.budget['1:fcn-b0'] == pytest.approx(2 + 0.5 + 0.1 + 0.2 + 0.05)
    res = search(cache, prof, max_exits=1, th_img=(0.9, 0.95), progress=False)
    chain, early, final = ExitConfig(('1:fcn-b0',), (0.5,), (0.9,)), ExitConfig(budget='1:fcn-b0'), ExitConfig(budget=FINAL)
    assert res.reference['miou'] == 1. and res.reference['flops'] == 10. and res.reference['latency'] == pytest.approx(10.35)
    r = res.evaluate(chain)
    assert r['latency'] == pytest.approx((2 * 3.1 + 2 * (0.75 + 10.35)) / 4) == prof.predict_latency(['1:fcn-b0'], r['hist'])
    assert r['drop_pp'] == 0 and r['speedup'] == pytest.approx(10.35 / 7.1) and r['flops_ratio'] == pytest.approx(10 / 6.5)
    for cost in ('latency', 'flops'):
        tg = res.targets(cost)
        assert list(tg.index) == list(TARGETS) == ['best', '0.1pp', '1pp']
        assert list(tg.target) == [TARGETS[k].label for k in TARGETS] == ['best mIoU at <= 1x cost', 'lowest cost at <= 0.1 pp drop', 'lowest cost at <= 1 pp drop']
        assert [res.target(k, cost) for k in TARGETS] == [chain] * 3
        assert list(tg.config) == [chain] * 3 and (tg.drop_pp == 0).all()
        assert res.pick(cost, max_drop_pp=70) == early                    # 66.7 pp allowed: the cheapest network
        assert res.pick(cost, min_miou=0.3) == early and res.pick(cost, min_miou=0.34) == chain
        assert res.pick(cost, budget=res.reference[cost]) == chain and res.pick(cost, budget=3.) == early
    assert list(res.budgeted().config) == [early, final]
    assert res.front('latency').speedup.tolist() == pytest.approx([10.35 / 2.85, 10.35 / 7.1])
    # infeasible: an error that names the closest configuration
    with pytest.raises(ValueError, match=r"cost <= 1 GFLOPs; the cheapest configuration: budget 1:fcn-b0 \(mIoU 0.3333, 2.5 GFLOPs\)"):
        res.pick('flops', budget=1.)
    with pytest.raises(ValueError, match=r"mIoU >= 1.0100; the most accurate configuration: 1:fcn-b0 \(0.5/0.9\) > final \(mIoU 1.0000, 7.1 ms\)"):
        res.pick('latency', min_miou=1.01)
    with pytest.raises(ValueError, match=r"the most accurate within 5 GFLOPs: budget 1:fcn-b0 \(mIoU 0.3333"):
        res.pick('flops', budget=5., min_miou=0.9)
    with pytest.raises(ValueError, match='needs a budget'): res.pick('flops')
    with pytest.raises(ValueError, match='max_drop_pp must be >= 0'): res.pick('flops', max_drop_pp=-1)
    with pytest.raises(ValueError, match='cost must be one of'): res.pick('energy', budget=1.)
    with pytest.raises(ValueError, match='target must be one of'): res.target('5pp')
    flops_only = search(cache, max_exits=1, th_img=(0.9,), progress=False)
    with pytest.raises(ValueError, match='search with a LatencyProfile'): flops_only.front('latency')

def test_two_exit_chain_known_answer():
    "Three images: one leaves at each exit. The best configuration uses both early exits."
    right, wrong = np.array([[10, 0], [0, 10]]), np.array([[0, 10], [10, 0]])
    keys, pos = ['1:fcn-b0', '4:fcn-b0', FINAL], [1, 4, 7]
    cms = np.stack([np.stack([right, right, right]), np.stack([wrong, right, right]), np.stack([wrong, wrong, right])])
    counts = np.array([[[20]], [[5]], [[5]]]) * np.array([1, 1])[None, :, None]          # (3, 2 heads, 1)
    counts[1, 1, 0] = 20
    meta = dict(net={}, size=[4, 5], n_candidates=8, seg_cum_gflops=[1., 2., 3., 4., 5., 6., 7., 8.],
                head_gflops={'1:fcn-b0': 0.5, '4:fcn-b0': 0.5, FINAL: 2.})
    cache = ExitCache(keys, pos, [0.5], counts, np.full((3, 2), 20), cms, None, ExitPolicy().to_dict(), ['a', 'b', 'c'], meta)
    res = search(cache, max_exits=2, th_img=(0.2, 0.5), progress=False)
    best = ExitConfig(('1:fcn-b0', '4:fcn-b0'), (0.5, 0.5), (0.5, 0.5))
    assert res.pick('flops', max_drop_pp=0) == best
    r = res.evaluate(best)
    assert r['exits'] == ['1:fcn-b0', '4:fcn-b0', FINAL] and r['miou'] == 1.
    assert r['flops'] == pytest.approx((2.5 + (0.5 + 5.5) + (0.5 + 0.5 + 10)) / 3)

# ---------------------------------------------------------------- (e) deployment and files
def _three_way_config(cache):
    "Two early exits with image thresholds at the median confidence: images leave at both and at the final exit"
    for k1, k2 in itertools.combinations(cache.heads, 2):
        if cache.pos[cache.keys.index(k1)] >= cache.pos[cache.keys.index(k2)]: continue
        for tp in cache.th_pix:
            c1 = cache.conf(k1, tp); t1 = float(np.sort(c1)[len(c1) // 2])
            c2 = cache.conf(k2, tp)[c1 < np.float32(t1)]
            if not len(c2): continue
            cfg = ExitConfig((k1, k2), (tp, tp), (t1, float(np.sort(c2)[len(c2) // 2])))
            if len(set(cache.evaluate(cfg)['exits'])) == 3: return cfg
    raise AssertionError('no configuration sends images to three exits')

def test_deploy_round_trip(cache, net, dl, tmp_path):
    res = search(cache, max_exits=2, th_img=(0.0, 0.7, 0.9, 0.95), th_pix=(0.12,), heads=['1:fcn-b0', '3:fcn-b0', '4:fcn-b0'], progress=False)
    cfg = _three_way_config(cache)                               # not necessarily on the front: any configuration deploys
    want = cache.evaluate(cfg)
    pred = res.deploy(cfg, net, path=tmp_path/'deployed.pth')
    assert list(pred.net.heads) == list(cfg.exits) and list(net.heads) == HEADS            # a pruned copy; the network keeps its heads
    with pytest.raises(FileExistsError): res.deploy(cfg, net, path=tmp_path/'deployed.pth')
    loaded = EarlyExitPredictor.load(tmp_path/'deployed.pth')
    assert loaded.exits == list(cfg.exits) + [FINAL] and loaded.policy == cfg.policy(cache.base_policy())
    ref = cfg.predictor(net, cache.base_policy())
    a, b, c = pred.get_preds(dl), loaded.get_preds(dl), ref.get_preds(dl)
    assert a[1] == b[1] == c[1] == want['exits']
    assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0])
    assert torch.equal(a[2].nan_to_num(-1), b[2].nan_to_num(-1))
    ev = loaded.evaluate(dl)
    assert np.array_equal(ev['cm'].numpy(), want['cm']) and ev['miou'] == pytest.approx(want['miou'], abs=1e-12)
    bud = res.deploy(ExitConfig(budget='3:fcn-b0'), net, path=tmp_path/'bud.pth')
    lb = EarlyExitPredictor.load(tmp_path/'bud.pth')
    assert lb.budget == '3:fcn-b0' and list(lb.net.heads) == ['3:fcn-b0']
    assert torch.equal(lb.get_preds(dl)[0], bud.get_preds(dl)[0])
    res.deploy(cfg, net, path=tmp_path/'deployed.pth', overwrite=True)
    with pytest.raises(ValueError, match='different network'): res.deploy(cfg, tiny_net(output_stride=16))

def test_search_result_save_load(cache, prof, tmp_path):
    res = search(cache, prof, max_exits=2, th_img=(0.0, 0.7, 0.9), progress=False)
    p = res.save(tmp_path/'search.json')
    with pytest.raises(FileExistsError): res.save(p)
    d = json.loads(p.read_text())
    assert d['format'] == 'mess_fast.SearchResult/1' and d['n_configs'] == res.n_configs and d['items'] == cache.items
    r2 = SearchResult.load(p, cache)
    assert r2.fronts == res.fronts and r2.n_configs == res.n_configs and r2.settings == res.settings
    assert r2.reference['miou'] == res.reference['miou'] and r2.reference['latency'] == res.reference['latency']
    for kind in ('latency', 'flops'):
        assert r2.front(kind).drop(columns='config').equals(res.front(kind).drop(columns='config'))
        assert list(r2.targets(kind).config) == list(res.targets(kind).config)
    other = ExitCache(cache.keys, cache.pos, cache.th_pix, cache.counts, cache.totals, cache.cms, cache.void, cache.policy,
                      cache.items[::-1], cache.meta)
    with pytest.raises(ValueError, match='other images'): SearchResult.load(p, other)
    with pytest.raises(FileNotFoundError, match='No search result'): SearchResult.load(tmp_path/'nope.json', cache)
    (tmp_path/'junk.json').write_bytes(b'\x89PNG\r\n\x1a\n\xff\xfe')
    with pytest.raises(ValueError, match='junk.json is not a JSON search result'): SearchResult.load(tmp_path/'junk.json', cache)
    (tmp_path/'other.json').write_text('{"format": "x"}')
    with pytest.raises(ValueError, match='not a mess_fast search result'): SearchResult.load(tmp_path/'other.json', cache)

def test_exit_cache_save_load(cache, tmp_path):
    p = cache.save(tmp_path/'cache.pt')
    with pytest.raises(FileExistsError): cache.save(p)
    c2 = ExitCache.load(p)
    for a in ('keys', 'pos', 'th_pix', 'void', 'policy', 'items', 'meta', 'labelled'): assert getattr(c2, a) == getattr(cache, a), a
    for a in ('counts', 'totals', 'cms', 'agree', 'n_pix'): assert np.array_equal(getattr(c2, a), getattr(cache, a)) and getattr(c2, a).dtype == getattr(cache, a).dtype
    rng = np.random.default_rng(3)
    for _ in range(20):
        cfg = random_config(cache, rng)
        assert c2.evaluate(cfg)['exits'] == cache.evaluate(cfg)['exits'] and c2.evaluate(cfg)['miou'] == cache.evaluate(cfg)['miou']
    cache.save(p, overwrite=True)
    with pytest.raises(FileNotFoundError, match='No exit cache'): ExitCache.load(tmp_path/'nope.pt')
    (tmp_path/'junk.pt').write_text('nope')
    with pytest.raises(ValueError, match='junk.pt is not a readable exit cache'): ExitCache.load(tmp_path/'junk.pt')
    d = torch.load(p, weights_only=True)                        # a cache of the previous format: no agreement counts, labelled
    for k in ('agree', 'n_pix', 'labelled'): del d[k]
    torch.save(d | dict(format='mess_fast.ExitCache/1'), tmp_path/'old.pt')
    old = ExitCache.load(tmp_path/'old.pt')
    assert old.agree is None and old.labelled and np.array_equal(old.cms, cache.cms)
    assert old.evaluate(ExitConfig(budget='3:fcn-b0'))['miou'] == cache.evaluate(ExitConfig(budget='3:fcn-b0'))['miou']
    assert 'disagreement' not in old.evaluate(ExitConfig(budget='3:fcn-b0'))
    with pytest.raises(ValueError, match='no agreement counts'): old.disagreement()
    assert CACHE_FORMAT == 'mess_fast.ExitCache/2' and torch.load(p, weights_only=True)['format'] == CACHE_FORMAT
    torch.save({'format': 'something else'}, tmp_path/'other.pt')
    with pytest.raises(ValueError, match='other.pt is not an exit cache'): ExitCache.load(tmp_path/'other.pt')
    with pytest.raises(ValueError, match='not an exit cache'): ExitCache.load(MESSNet('resnet18', n_classes=3, output_stride=32).save(tmp_path/'net.pth'))

def test_check_picks_predicts_the_measurement(cache, prof, net, dl):
    "On the split a cache was built from, the predicted mIoU and exits of every pick are the measured ones"
    res = search(cache, prof, max_exits=2, th_img=(0.0, 0.7, 0.9, 0.95), th_pix=(0.12,), heads=['1:fcn-crm-b1-rdi', '4:fcn-crm-b1-rdi'], progress=False)
    chk = check_picks(res, net, dl, eval_cache=cache, rounds=1)
    assert list(chk.index) == [FINAL, 'best', '0.1pp', '1pp']
    assert list(chk.label) == ['single-exit network'] + [TARGETS[k].label for k in TARGETS]
    assert list(chk.config) == [ExitConfig(budget=FINAL).name] + [c.name for c in res.targets().config]
    np.testing.assert_allclose(chk.eval_pred_miou, chk.eval_miou, atol=1e-12)
    np.testing.assert_allclose(chk.calib_miou, chk.eval_miou, atol=1e-12)
    assert (chk.eval_latency_ms > 0).all() and chk.eval_drop_pp.iloc[0] == 0

def test_damaged_search_files_name_the_file(cache, tmp_path):
    (tmp_path/'search.json').write_text(json.dumps({'format': 'mess_fast.SearchResult/1'}))
    with pytest.raises(ValueError, match='search.json'): SearchResult.load(tmp_path/'search.json', cache)
    torch.save({'format': 'mess_fast.ExitCache/1', 'keys': cache.keys}, tmp_path/'cache.pt')
    with pytest.raises(ValueError, match='cache.pt'): ExitCache.load(tmp_path/'cache.pt')
