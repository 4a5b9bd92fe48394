"""The search on what ONNX Runtime runs (`mess_fast.onnx_search`): a cache built by the exported graphs, a latency
profile measured on them, and deployments made of those graphs — which answer exactly as the cache says (the same exit
on every frame, bit-for-bit equal confusion matrices), in float32 and in int8; label-free caches; bad input."""
import json
import numpy as np, pytest, torch
from mess_fast.core import FINAL
from mess_fast.loaders import mess_dls, input_meta
from mess_fast.fixtures import tiny_net
from mess_fast.cache import ExitConfig
from mess_fast.search import search
from mess_fast.export import export_onnx
from mess_fast.runtime import OnnxEarlyExitRunner, MANIFEST
from mess_fast.onnx_search import build_onnx_cache, profile_onnx, select_onnx

pytest.importorskip('onnx')
HEADS = ['1:fcn-b0', '3:fcn-b0', '3:aspp-crm-b0', '5:fcn-b0']
TH_PIX = (0.1, 0.12, 0.15)

@pytest.fixture(scope='module')
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('onnx_search')
    dls = mess_dls(size=(64, 96), bs=4, max_items=12)
    net = tiny_net(HEADS)
    net.meta = dict(input=input_meta(dls))
    pairs = dls.source.valid
    full = export_onnx(net, tmp/'all', all_exits=True)
    xq = torch.cat([b[0] for b in dls.train][:2]).as_subclass(torch.Tensor)
    full8 = export_onnx(net, tmp/'all8', all_exits=True, quantize='int8', calib=xq)
    return dict(tmp=tmp, pairs=pairs, full=full, full8=full8, cache=build_onnx_cache(full, pairs, TH_PIX, progress=False),
                cache8=build_onnx_cache(full8, pairs, TH_PIX, progress=False))

def spread(cache):
    "Configurations whose images leave at every chosen exit: thresholds at quantiles of the images still there"
    c1, c2 = cache.conf('1:fcn-b0', 0.12), cache.conf('3:aspp-crm-b0', 0.1)
    t1 = float(np.quantile(c1, 0.4)); rest = c1 < t1
    t2 = float(np.median(c2[rest])) if rest.any() else 1.
    return [ExitConfig(('1:fcn-b0', '3:aspp-crm-b0'), (0.12, 0.1), (t1, t2)),
            ExitConfig(('1:fcn-b0',), (0.15,), (float(np.median(cache.conf('1:fcn-b0', 0.15))),)),
            ExitConfig(budget='3:fcn-b0'), ExitConfig(budget=FINAL), ExitConfig()]

@pytest.mark.parametrize('which', ['float32', 'int8'])
def test_deployment_answers_as_the_cache(setup, which, tmp_path):
    "Every configuration deployed with `select_onnx` takes the cache's exit on every frame, with the cache's confusion matrix bit for bit"
    full, cache = (setup['full'], setup['cache']) if which == 'float32' else (setup['full8'], setup['cache8'])
    cfgs = spread(cache)
    used = set()
    for i, cfg in enumerate(cfgs):
        dep = select_onnx(full, cfg, tmp_path/f'd{i}')
        r = OnnxEarlyExitRunner(dep, threads=1)
        assert r.exits == cfg.chain and r.quantize == (None if which == 'float32' else 'int8')
        got, want = r.evaluate(setup['pairs'], warmup=0), cache.evaluate(cfg)
        assert got['exits'] == want['exits'], (cfg.name, got['hist'], want['hist'])
        np.testing.assert_array_equal(got['cm'], want['cm'])
        used |= set(got['exits'])
        # the deployment holds only the graphs it runs, the very files of the export
        man = json.loads((dep/MANIFEST).read_text())
        assert set(man['files']) == {p.name for p in dep.glob('*.onnx')} < set(json.loads((full/MANIFEST).read_text())['files'])
        for fn, f in man['files'].items(): assert (dep/fn).read_bytes() == (full/fn).read_bytes()
    assert {'1:fcn-b0', '3:aspp-crm-b0', FINAL} <= used, used     # the parity was tested on images leaving at each exit

def test_int8_cache_is_another_network(setup):
    "The int8 cache is not the float32 one (quantization moved labels and confidences), and the search sees that"
    c, c8 = setup['cache'], setup['cache8']
    assert c.keys == c8.keys and c.items == c8.items
    assert (c.cms != c8.cms).any() and (c.counts != c8.counts).any()
    assert c8.meta['quantize'] == 'int8' and c.meta['quantize'] is None

def test_search_with_the_onnx_profile(setup):
    "profile_onnx gives a LatencyProfile the search takes; its rows are the runtime's graphs"
    prof = profile_onnx(setup['full'], reps=2, warmup=1, progress=False)
    assert prof.exit_keys == HEADS + [FINAL] and prof.meta['runtime'].startswith('onnxruntime')
    assert 'onnxruntime' in repr(prof)
    t = prof.table
    assert sorted(t[t.kind == 'segment'].pos.tolist()) == [1, 3, 5, 7]
    assert (t[t.kind.isin(['segment', 'head'])].ms >= 0).all() and (prof.summary().latency_ms > 0).all()
    res = search(setup['cache'], prof, th_img=(0.3, 0.6), progress=False)
    assert 'latency' in res.costs and len(res.front('latency'))
    assert res.reference['latency'] == pytest.approx(prof.exit_latency(FINAL), rel=1e-6)   # the single-exit network's cost

def test_label_free_cache(setup):
    "Bare images: the reference is the final exit (its confusion matrices diagonal), no void"
    imgs = [a for a, _ in setup['pairs']]
    c = build_onnx_cache(setup['full'], imgs, TH_PIX, progress=False)
    assert not c.labelled and c.void is None and c.items == [p.name for p in imgs]
    fin = c.cms[:, -1]
    assert all((m == np.diag(np.diag(m))).all() for m in fin)
    np.testing.assert_array_equal(c.counts, setup['cache'].counts)          # the same graphs: the same confidences
    np.testing.assert_array_equal(c.agree, setup['cache'].agree)

def test_bad_input(setup, tmp_path):
    one = select_onnx(setup['full'], ExitConfig(budget=FINAL), tmp_path/'one')
    with pytest.raises(ValueError, match='all_exits=True'): build_onnx_cache(one, setup['pairs'], progress=False)
    with pytest.raises(ValueError, match='all-exit export'): select_onnx(one, ExitConfig(), tmp_path/'x')
    with pytest.raises(ValueError, match='th_pix grid'): build_onnx_cache(setup['full'], setup['pairs'], (1.5,), progress=False)
    with pytest.raises(ValueError, match='No calibration frames'): build_onnx_cache(setup['full'], [], progress=False)
    with pytest.raises(KeyError, match='no graphs for exits'): select_onnx(setup['full'], ExitConfig(budget='2:fcn-b0'), tmp_path/'y')
    keep = tmp_path/'keep'; keep.mkdir(); (keep/'mine.txt').write_text('mine')
    with pytest.raises(FileExistsError, match='not empty'): select_onnx(setup['full'], ExitConfig(), keep)
    assert (keep/'mine.txt').read_text() == 'mine' and not (tmp_path/'.keep.partial').exists()
    assert select_onnx(setup['full'], '1:fcn-b0 (0.12/0.5) > final', tmp_path/'byname').is_dir()   # a name works too
