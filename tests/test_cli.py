"""`mess_fast train`, `search` and `predict` end to end on one tiny run: the files each writes, the pick each option deploys,
masks at the images' own sizes, one-line errors for bad input (the user-reported ones too), help texts, and nothing ever overwritten."""
import re, shutil, time
from pathlib import Path

import numpy as np, pandas as pd, pytest, torch
from PIL import Image
from cli_helpers import cli, console, one_line_error
from mess_fast.data import mini_camvid_path, CAMVID_CODES, CAMVID_PALETTE
from mess_fast.imaging import prepare_image
from mess_fast.core import FINAL
from mess_fast.model import MESSNet
from mess_fast.loaders import mess_dls
from mess_fast.train import mess_learner
from mess_fast.predict import EarlyExitPredictor
from mess_fast.cache import ExitCache, ExitConfig
from mess_fast.policy import ExitPolicy, step_size
from mess_fast.search import SearchResult, TARGETS

TRAIN = ['--size', '64,96', '--max-items', '8', '--epochs1', '1', '--epochs2', '1', '--grid', 'fcn-b0', '--positions', '2,5']
SEARCH_FILES = ['cache.pt', 'deployed.pth', 'pareto.png', 'picks.csv', 'profile.json', 'search.json', 'strip.npz']
QUICK = ['--rounds', '1', '--th-pix', '0.5,0.9', '--th-img', '0,0.5,0.9,1']    # a smaller search: these tests are about the options

@pytest.fixture(scope='module')
def run(tmp_path_factory):
    "One tiny run of the real console script (train, then its search), shared by the tests of this module"
    d = tmp_path_factory.mktemp('cli')
    r = console('train', *TRAIN, '--out', 'run', cwd=d)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    assert 'Traceback' not in r.stderr and 'Deployed' in r.stdout
    return d/'run'

def fresh_copy(run, dest):
    "The trained network and its description, in a new run folder (so each test sees its own search-N numbering)"
    dest.mkdir(parents=True)
    for f in ('run.json', 'model.pth'): shutil.copy(run/f, dest/f)
    shutil.copytree(run/'search', dest/'search')
    return dest

def deployed_config(path):
    "The configuration a deployed checkpoint runs, as an ExitConfig"
    p = EarlyExitPredictor.load(path)
    if p.budget is not None: return ExitConfig(budget=p.budget)
    ks = p.exits[:-1]
    return ExitConfig(ks, [p.policy.thresholds(k)[0] for k in ks], [p.policy.thresholds(k)[1] for k in ks])

def result_of(folder):
    cache = ExitCache.load(folder/'cache.pt')
    return SearchResult.load(folder/'search.json', cache), cache

# ---------------------------------------------------------------- train (+ its search)
def test_train_writes_the_run(run):
    assert sorted(p.name for p in run.iterdir()) == ['exits.csv', 'exits.png', 'model.pth', 'results.png', 'run.json', 'search']   # learner.pkl only with --learner
    assert sorted(p.name for p in (run/'search').iterdir()) == SEARCH_FILES
    import json
    args = json.loads((run/'run.json').read_text())['args']
    assert args['size'] == [64, 96] and args['max_items'] == 8 and args['grid'] == ['fcn-b0'] and args['positions'] == [2, 5]
    net = MESSNet.load(run/'model.pth')
    assert net.exit_keys == ['2:fcn-b0', '5:fcn-b0', FINAL] and net.config['output_stride'] == 16
    assert net.meta['input']['size'] == [64, 96] and net.meta['input']['codes'] == CAMVID_CODES and net.meta['input']['void'] == 11
    assert list(pd.read_csv(run/'exits.csv').key) == net.exit_keys
    res, cache = result_of(run/'search')
    assert cache.keys == net.exit_keys and cache.n_images == 4                # the first half of the 8 validation frames
    assert deployed_config(run/'search'/'deployed.pth') == res.target('0.1pp') == res.targets('latency').loc['0.1pp', 'config']
    picks = pd.read_csv(run/'search'/'picks.csv')
    assert list(picks.target) == [FINAL] + list(TARGETS) and picks.label.iloc[0] == 'single-exit network'
    assert list(picks.config) == [ExitConfig(budget=FINAL).name] + [c.name for c in res.targets('latency').config]

# ---------------------------------------------------------------- explore
def test_explorer_page_of_a_run(run, tmp_path, monkeypatch):
    "`mess_fast explore RUN` writes the page beside the run's latest search; its one cell builds the explorer of that search"
    import json
    from mess_fast.explore import explorer_notebook
    r = fresh_copy(run, tmp_path/'run')
    nb = explorer_notebook(r)
    assert nb == r/'search'/'explorer.ipynb'
    cells = json.loads(nb.read_text())['cells']
    assert [c['cell_type'] for c in cells] == ['markdown', 'code'] and len(''.join(cells[0]['source']).splitlines()) == 5   # title, blank, 3 lines
    monkeypatch.chdir(nb.parent)
    ns = {}
    exec(''.join(cells[1]['source']).replace('ExitExplorer(', 'ex = ExitExplorer(', 1), ns)
    ex, (res, _) = ns['ex'], result_of(r/'search')
    assert ex.ok and ex.net is not None and len(ex.strip) == 4 and ex.res.n_configs == res.n_configs   # the 4 calibration frames
    assert ex.config == res.target('0.1pp')

def err_of(r): return r[0], r[2]

def test_explore_bad_input(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(*err_of(cli('explore', run/'model.pth')), 'model.pth is a file', 'run folder')
    (tmp_path/'empty').mkdir()
    one_line_error(*err_of(cli('explore', tmp_path/'empty')), 'no search.json', 'mess_fast search')
    one_line_error(*err_of(cli('explore', tmp_path/'nope')), 'no such folder')
    one_line_error(*err_of(cli('explore', run, '--port', '70000')), '--port', '1..65535')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['empty']

# ---------------------------------------------------------------- search
def test_search_again_writes_search_2(run, tmp_path):
    r = fresh_copy(run, tmp_path/'run')
    before = {p.name: p.read_bytes() for p in (r/'search').iterdir()}
    rc, out, err = cli('search', r, '--rounds', '1')
    assert rc == 0, err[-3000:]
    assert sorted(p.name for p in r.iterdir()) == ['model.pth', 'run.json', 'search', 'search-2']
    assert sorted(p.name for p in (r/'search-2').iterdir()) == SEARCH_FILES
    assert {p.name: p.read_bytes() for p in (r/'search').iterdir()} == before      # the first search is untouched
    res, _ = result_of(r/'search-2')
    assert deployed_config(r/'search-2'/'deployed.pth') == res.targets('latency').loc['0.1pp', 'config']
    assert 'search-2/deployed.pth' in out

def test_search_options_choose_the_deployed_pick(run, tmp_path):
    r = fresh_copy(run, tmp_path/'run')
    cases = [(['--target', '1pp'], lambda res: res.targets('latency').loc['1pp', 'config']),
             (['--max-drop', '2'], lambda res: res.pick('latency', max_drop_pp=2)),
             (['--budget-ms', '1000'], lambda res: res.pick('latency', budget=1000)),
             (['--cost', 'flops', '--target', 'best'], lambda res: res.target('best', 'flops'))]
    for i, (opts, want) in enumerate(cases, start=2):
        rc, out, err = cli('search', r, *QUICK, *opts)
        assert rc == 0, (opts, err[-3000:])
        res, cache = result_of(r/f'search-{i}')
        assert cache.th_pix == [0.5, 0.9] and res.settings['th_img'] == [0., 0.5, 0.9, 1.]
        assert deployed_config(r/f'search-{i}'/'deployed.pth') == want(res), opts

def test_search_max_disagreement_is_the_start_for_control(run, tmp_path, monkeypatch):
    "Issue 25: --max-disagreement A deploys the lowest latency at <= A pixels labelled otherwise than by the final exit"
    from mess_fast.search import search
    from mess_fast.profile import LatencyProfile
    r = fresh_copy(run, tmp_path/'run')
    rc, out, err = cli('search', r, *QUICK, '--max-disagreement', '0.2')
    assert rc == 0, err[-3000:]
    res, cache = result_of(r/'search-2')
    prof = LatencyProfile.load(r/'search-2'/'profile.json')
    agr = search(cache, prof, max_exits=res.settings['max_exits'], th_img=res.settings['th_img'], accuracy='agreement',
                 truncated=False, progress=False)                     # what control can steer: chains, and the full network
    got = deployed_config(r/'search-2'/'deployed.pth')
    pick = agr.pick('latency', max_disagreement=0.2)
    assert got == cache.tighten(pick) and agr.pooled_disagreement(got) <= 0.2 + 1e-12   # tight: the same exits there
    assert cache.taken(got) == cache.taken(pick) and all(a >= b for a, b in zip(got.th_img, pick.th_img))
    assert got.budget in (None, FINAL)
    cheaper = agr.front('latency')[agr.front('latency').latency_ms < agr.evaluate(got)['latency']]
    assert all(agr.pooled_disagreement(c) > 0.2 + 1e-12 for c in cheaper.config)   # nothing cheaper within 0.2 on the exact front
    assert SearchResult.load(r/'search-2'/'search_agreement.json', cache).fronts == agr.fronts
    assert 'disagreement with the final exit on the calibration half' in out
    assert ('predict --audit' in out) == (got.budget is None) and ('no early-exit chain' in out) == (got.budget == FINAL)
    t = agr.budgeted()                  # a cheaper truncated network within 0.2 is named (it has nothing to control)
    t = t[(t.pooled_disagreement <= 0.2 + 1e-12) & (t.latency_ms < agr.evaluate(got)['latency'])]
    assert ('alone is cheaper within it' in out) == (len(t) > 0)
    monkeypatch.chdir(tmp_path)
    for args, words in [(['--max-disagreement', '1.5'], ['--max-disagreement', '1.5']),
                        (['--max-disagreement', '0'], ['--max-disagreement', '(0, 1)']),
                        (['--max-disagreement', '0.1', '--risk', 'disagreement'], ['--max-disagreement', '--risk']),
                        (['--max-disagreement', '0.1', '--max-drop', '1'], ['--max-disagreement', '--max-drop'])]:
        rc, out, err = cli('search', r, *args)
        one_line_error(rc, err, *words)
    assert sorted(p.name for p in r.iterdir()) == ['model.pth', 'run.json', 'search', 'search-2']

def test_search_unlabelled_frames_choose_the_start(run, tmp_path):
    ("Issue 25: the start for online control chosen label-free on frames of the new street (`--data FOLDER --unlabelled "
     "--max-disagreement A`): the folder's first half in name order is the calibration cache, and the deployed chain is "
     "the tightened cheapest one within A there")
    from mess_fast.search import search
    from mess_fast.profile import LatencyProfile
    r = fresh_copy(run, tmp_path/'run')
    street = tmp_path/'street'; street.mkdir()
    frames = sorted((mini_camvid_path()/'val').glob('*.jpg'))[:7]
    for f in frames[::-1]: shutil.copy(f, street/f.name)          # written in reverse: the order is the names'
    # a loose A: the pick is a chain, so its thresholds are tightened
    rc, out, err = cli('search', r, *QUICK, '--data', street, '--unlabelled', '--max-disagreement', '0.99')
    assert rc == 0, err[-3000:]
    assert '4 + 3 unlabelled frames of street' in out
    res, cache = result_of(r/'search-2')
    assert cache.n_images == 4 and [Path(str(i)).name for i in cache.items] == [f.name for f in frames[:4]]
    prof = LatencyProfile.load(r/'search-2'/'profile.json')
    agr = search(cache, prof, max_exits=res.settings['max_exits'], th_img=res.settings['th_img'], accuracy='agreement',
                 truncated=False, progress=False)
    got, pick = deployed_config(r/'search-2'/'deployed.pth'), agr.pick('latency', max_disagreement=0.99)
    assert got.budget is None and got == cache.tighten(pick) and agr.pooled_disagreement(got) <= 0.99 + 1e-12
    assert cache.taken(got) == cache.taken(pick)                   # tight: the same exits on the calibration half
    assert SearchResult.load(r/'search-2'/'search_agreement.json', cache).fronts == agr.fronts
    assert sorted(p.name for p in r.iterdir()) == ['model.pth', 'run.json', 'search', 'search-2']

def test_search_impossible_budget(run, tmp_path):
    r = fresh_copy(run, tmp_path/'run')
    rc, out, err = cli('search', r, *QUICK, '--budget-ms', '0.0001')
    line = one_line_error(rc, err, 'No configuration meets cost <= 0.0001 ms', 'the cheapest configuration: ')
    res, _ = result_of(r/'search-2')                             # the search itself is kept: the closest configuration is named
    assert res.front('latency').name.iloc[0] in line
    assert not (r/'search-2'/'deployed.pth').exists()

def test_search_bad_runs(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    one_line_error(*cli('search', tmp_path/'missing')[::2], 'missing', 'no such run folder')
    (tmp_path/'empty').mkdir()
    one_line_error(*cli('search', tmp_path/'empty')[::2], 'no run.json')
    r = fresh_copy(run, tmp_path/'noheads')                      # a network without exit heads, as a run folder
    (r/'model.pth').unlink(); shutil.rmtree(r/'search')
    MESSNet.load(run/'model.pth').pruned([]).save(r/'model.pth')
    one_line_error(*cli('search', r)[::2], 'no exit heads')
    r = fresh_copy(run, tmp_path/'badopts')
    for opts, words in [(['--target', '5pp'], ['--target', '5pp']), (['--budget-ms', '-3'], ['--budget-ms']),
                        (['--max-drop', '-1'], ['--max-drop']), (['--cost', 'energy'], ['--cost']), (['--th-img', '0.5,2'], ['--th-img'])]:
        one_line_error(*cli('search', r, *opts)[::2], *words)
    assert sorted(p.name for p in r.iterdir()) == ['model.pth', 'run.json', 'search']   # no search-2 for any of them
    (r/'run.json').write_text('{"not": "a run"}')
    one_line_error(*cli('search', r)[::2], 'run.json', 'not a run description')

# ---------------------------------------------------------------- predict
@pytest.fixture(scope='module')
def images(tmp_path_factory):
    "Two image files of odd sizes (PNG, JPEG) and a folder of two more (and a text file it must skip)"
    d = tmp_path_factory.mktemp('imgs')
    frames = sorted((mini_camvid_path()/'val').iterdir())
    im = lambda i: Image.open(frames[i]).convert('RGB')
    im(0).resize((131, 97)).save(d/'img1.png')
    im(1).crop((10, 5, 210, 155)).save(d/'img2.jpg', quality=90)
    (d/'more').mkdir()
    im(2).save(d/'more'/'a.png'); im(3).resize((96, 64)).save(d/'more'/'b.png')
    (d/'more'/'notes.txt').write_text('not an image')
    return d

def check_masks(out, deployed, files):
    pred = EarlyExitPredictor.load(deployed)
    inp = pred.net.meta['input']
    df = pd.read_csv(out/'predictions.csv')
    assert list(df.columns) == ['image', 'mask', 'exit', 'confidence', 'latency_ms']
    assert list(df.image) == [f.name for f in files] and sorted(p.name for p in out.iterdir()) == sorted([f'{f.stem}.png' for f in files] + ['predictions.csv'])
    for f, row in zip(files, df.itertuples()):
        m = Image.open(out/row.mask)
        with Image.open(f) as img: assert m.size == img.size, f          # the image's own size
        assert m.mode == 'P' and np.array_equal(np.array(m.getpalette()[:36]).reshape(12, 3), CAMVID_PALETTE)
        r = pred.predict_batch(torch.from_numpy(prepare_image(f, inp['size'], inp['mean'], inp['std'])))
        want = Image.fromarray(r['masks'][0].numpy().astype(np.uint8)).resize(m.size, Image.NEAREST)
        assert np.array_equal(np.asarray(m), np.asarray(want)), f          # the network's mask, resized without blending labels
        assert row.exit == r['exits'][0] and row.latency_ms > 0
        c = float(r['conf'][0])
        assert (np.isnan(row.confidence) and np.isnan(c)) or row.confidence == pytest.approx(c)
    return df

def test_predict_writes_masks_at_the_images_sizes(run, images, tmp_path):
    files = [images/'img1.png', images/'img2.jpg', images/'more'/'a.png', images/'more'/'b.png']
    rc, out, err = cli('predict', run/'search'/'deployed.pth', images/'img1.png', images/'img2.jpg', images/'more', '--out', tmp_path/'pred')
    assert rc == 0, err[-3000:]
    check_masks(tmp_path/'pred', run/'search'/'deployed.pth', files)
    # an early-exit deployment (not budgeted): the policy decides, and its confidence is reported
    res, cache = result_of(run/'search')
    cfg = ExitConfig(('2:fcn-b0', '5:fcn-b0'), (0.5, 0.5), (0.0, 0.0))
    res.deploy(cfg, MESSNet.load(run/'model.pth'), path=tmp_path/'early.pth')
    rc, out, err = cli('predict', tmp_path/'early.pth', images/'more', images/'img1.png', '--out', tmp_path/'pred_early')
    assert rc == 0, err[-3000:]
    df = check_masks(tmp_path/'pred_early', tmp_path/'early.pth', [images/'more'/'a.png', images/'more'/'b.png', images/'img1.png'])
    assert (df.exit == '2:fcn-b0').all() and df.confidence.between(0, 1).all()

def test_predict_errors(run, images, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dep = run/'search'/'deployed.pth'
    one_line_error(*cli('predict', dep, images/'more'/'notes.txt', images/'img1.png', '--out', 'o1')[::2], 'notes.txt', 'cannot read image')
    one_line_error(*cli('predict', run/'model.pth', images/'img1.png', '--out', 'o2')[::2], 'no deployed predictor')
    one_line_error(*cli('predict', tmp_path/'nope.pth', images/'img1.png', '--out', 'o3')[::2], 'nope.pth')
    one_line_error(*cli('predict', dep, images/'gone.png', '--out', 'o4')[::2], 'gone.png')
    (tmp_path/'noimg').mkdir(); (tmp_path/'noimg'/'x.txt').write_text('x')
    one_line_error(*cli('predict', dep, tmp_path/'noimg', '--out', 'o5')[::2], 'no image files')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['noimg']       # no output folder for any of them

def test_predict_never_overwrites(run, images, tmp_path):
    dep = run/'search'/'deployed.pth'
    assert cli('predict', dep, images/'img1.png', '--out', tmp_path/'out')[0] == 0
    first = {p.name: p.read_bytes() for p in (tmp_path/'out').iterdir()}
    rc, out, err = cli('predict', dep, images/'img1.png', images/'img2.jpg', '--out', tmp_path/'out')
    assert rc == 0, err
    assert {p.name: p.read_bytes() for p in (tmp_path/'out').iterdir()} == first
    assert sorted(p.name for p in (tmp_path/'out-2').iterdir()) == ['img1.png', 'img2.png', 'predictions.csv']
    assert 'out-2' in out

def test_export_int8_and_predict_onnx(run, images, tmp_path):
    "export --int8: calibrated on the run's search frames by default or on --calib; predict --onnx runs it; --calib alone is a one-line error"
    import json
    from mess_fast.export import search_calibration_frames
    rc, out, err = cli('export', run, '--int8', '--out', tmp_path/'o8')
    assert rc == 0, err[-3000:]
    man = json.loads((tmp_path/'o8'/'manifest.json').read_text())
    assert man['quantize'] == 'int8' and man['quantization']['frames'] == len(search_calibration_frames(run)) > 0
    assert 'int8, calibrated on' in out
    rc, out, err = cli('export', run, '--int8', '--calib', mini_camvid_path()/'val', '--out', tmp_path/'o8c')
    assert rc == 0, err[-3000:]
    assert json.loads((tmp_path/'o8c'/'manifest.json').read_text())['quantization']['frames'] == len(list((mini_camvid_path()/'val').iterdir()))
    rc, out, err = cli('predict', '--onnx', tmp_path/'o8', images/'img1.png', images/'more', '--out', tmp_path/'pred', '--threads', '1')
    assert rc == 0, err[-3000:]
    df = pd.read_csv(tmp_path/'pred'/'predictions.csv')
    assert len(df) == 3 and df.exit.isin([p['key'] for p in man['parts']]).all()
    one_line_error(*cli('export', run, '--calib', images, '--out', tmp_path/'oc')[::2], '--calib', 'add --int8')
    assert not (tmp_path/'oc').exists()

def test_export_all_exits_for_a_search_on_onnx(run, tmp_path):
    "export --all-exits: every exit of the run's network, which mess_fast.onnx_search caches, profiles and deploys from"
    import json
    from mess_fast.data import seg_source
    from mess_fast.cache import ExitConfig
    from mess_fast.runtime import OnnxEarlyExitRunner
    from mess_fast.onnx_search import build_onnx_cache, select_onnx
    rc, out, err = cli('export', run, '--all-exits', '--out', tmp_path/'all')
    assert rc == 0, err[-3000:]
    man = json.loads((tmp_path/'all'/'manifest.json').read_text())
    net = MESSNet.load(run/'model.pth')
    assert man['all_exits'] and [p['key'] for p in man['parts']] == net.exit_keys and 'every exit' in out
    pairs = seg_source(mini_camvid_path()).valid[:4]
    cache = build_onnx_cache(tmp_path/'all', pairs, progress=False)
    cfg = ExitConfig((cache.heads[0],), (cache.th_pix[0],), (0.5,))
    r = OnnxEarlyExitRunner(select_onnx(tmp_path/'all', cfg, tmp_path/'dep'), threads=1)
    got = r.evaluate(pairs, warmup=0)
    assert got['exits'] == cache.evaluate(cfg)['exits'] and (got['cm'] == cache.evaluate(cfg)['cm']).all()
    # a deployment of one configuration cannot be searched: the error says what to export
    assert cli('export', run, '--out', tmp_path/'one')[0] == 0
    with pytest.raises(ValueError, match='--all-exits'): build_onnx_cache(tmp_path/'one', pairs, progress=False)

def test_search_on_onnx(run, tmp_path):
    "Issue 27: `mess_fast search RUN --onnx EXPORT` searches what ONNX Runtime runs and deploys a folder of its graphs, exactly"
    import json
    from mess_fast.data import split_pairs
    from mess_fast.runtime import OnnxEarlyExitRunner
    r = fresh_copy(run, tmp_path/'run')
    assert cli('export', r, '--all-exits', '--out', tmp_path/'all')[0] == 0
    rc, out, err = cli('search', r, '--onnx', tmp_path/'all', *QUICK)
    assert rc == 0, err[-3000:]
    s = r/'search-2'
    assert sorted(p.name for p in s.iterdir()) == ['cache.pt', 'deployed_onnx', 'pareto.png', 'picks.csv', 'profile.json', 'search.json']
    assert 'ONNX Runtime graphs of all' in out and 'mess_fast predict --onnx' in out and 'search-2/deployed_onnx' in out
    res, cache = result_of(s)
    assert cache.meta['runtime'].startswith('onnxruntime') and res.settings['th_img'] == [0., 0.5, 0.9, 1.]
    man = json.loads((s/'deployed_onnx'/'manifest.json').read_text())
    cfg = ExitConfig.from_name(man['selected_from']['config'])
    assert cfg == res.target('0.1pp')
    # the deployment answers on the calibration half exactly as the search's cache says
    calib, _ = split_pairs(mess_dls(size=(64, 96), max_items=8, augment=False).source.valid, 'halves')
    got, want = OnnxEarlyExitRunner(s/'deployed_onnx', threads=1).evaluate(calib, warmup=0), cache.evaluate(cfg)
    assert got['exits'] == want['exits'] and (got['cm'] == want['cm']).all()
    # and the picks measured on the evaluation half are what its ONNX cache predicted
    picks = pd.read_csv(s/'picks.csv', index_col=0)
    assert list(picks.index) == [FINAL] + list(TARGETS)
    np.testing.assert_allclose(picks.eval_miou, picks.eval_pred_miou, rtol=0, atol=1e-12)
    assert sorted(p.name for p in r.iterdir()) == ['model.pth', 'run.json', 'search', 'search-2']
    # `predict RUN` runs the run's latest deployment: this ONNX one (not search/deployed.pth), with ONNX Runtime
    imgs = [p for p, _ in calib[:2]]
    rc, out, err = cli('predict', r, *imgs, '--out', tmp_path/'pred')
    assert rc == 0 and 'search-2/deployed_onnx' in out and 'ONNX Runtime' in out, err[-3000:]
    assert list(pd.read_csv(tmp_path/'pred'/'predictions.csv').exit) == got['exits'][:2]
    rc, out, err = cli('predict', r/'search', *imgs, '--out', tmp_path/'pred-torch')         # a search folder: its own
    assert rc == 0 and 'ONNX Runtime' not in out, err[-3000:]

def test_search_on_onnx_bad_input(run, tmp_path, monkeypatch):
    "`search --onnx`: a folder that is not an all-exit export of this run's network is one line, and nothing is written"
    import json
    r = fresh_copy(run, tmp_path/'run')
    monkeypatch.chdir(tmp_path)
    one_line_error(*err_of(cli('search', r, '--onnx', tmp_path/'nope')), '--onnx', 'nope: no such folder')
    assert cli('export', r, '--out', tmp_path/'one')[0] == 0
    one_line_error(*err_of(cli('search', r, '--onnx', tmp_path/'one')), '--onnx', 'one configuration', '--all-exits')
    one_line_error(*err_of(cli('search', r, '--onnx', tmp_path/'one', '--data', tmp_path, '--unlabelled')),
                   '--onnx', '--unlabelled')
    assert cli('export', r, '--all-exits', '--out', tmp_path/'all')[0] == 0
    m = tmp_path/'all'/'manifest.json'
    man = json.loads(m.read_text()); man['net_sha256'] = '0' * 64; m.write_text(json.dumps(man))
    one_line_error(*err_of(cli('search', r, '--onnx', tmp_path/'all')), '--onnx', 'another network', 'other weights')
    assert sorted(p.name for p in r.iterdir()) == ['model.pth', 'run.json', 'search']

# ---------------------------------------------------------------- user-reported bugs (numbered as in the report)
CODES = 12      # the CamVid codes (the default when a SegNet-layout dataset has no codes.txt)
TINY = ['--size', '32,48', '--epochs1', '1', '--epochs2', '1', '--grid', 'fcn-b0', '--positions', '2']

def segnet_ds(root, n_train=4, n_val=2, size=(36, 48)):
    "A tiny SegNet-layout dataset with CamVid codes: train/ trainannot/ val/ valannot/"
    rng = np.random.default_rng(0)
    h, w = size
    for split, n in (('train', n_train), ('val', n_val)):
        (root/split).mkdir(parents=True, exist_ok=True); (root/f'{split}annot').mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root/split/f'f{i}.png')
            Image.fromarray((np.arange(h * w).reshape(h, w) % CODES).astype(np.uint8), mode='L').save(root/f'{split}annot'/f'f{i}.png')
    return root

def test_batch_size_one_is_a_clear_error(tmp_path, monkeypatch):
    "Bug 1 (user report): `mess_fast train --bs 1` crashed in BatchNorm during the first epoch"
    with pytest.raises(ValueError, match='[Bb]atch size'): mess_learner(mess_dls(size=(32, 48), bs=1, max_items=4), positions=[2])
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli('train', '--bs', '1', '--max-items', '2', '--out', 'run', *TINY)
    one_line_error(rc, err, '--bs', '2')
    assert not (tmp_path/'run').exists()

def test_bad_validation_mask_found_before_training(tmp_path, monkeypatch):
    "Bug 4 (user report): a bad mask in the validation split was found only after a full training epoch"
    ds = segnet_ds(tmp_path/'ds')
    Image.fromarray(np.full((36, 48), 200, np.uint8), mode='L').save(ds/'valannot'/'f1.png')
    monkeypatch.chdir(tmp_path)
    t = time.time()
    rc, out, err = cli('train', '--data', ds, '--out', 'run', '--bs', '2', *TINY)
    assert rc == 1 and 'Traceback' not in err, err[-2000:]
    assert 'ds (segnet layout' in err and 'valannot/f1.png: mask values 200 are not class codes' in err   # the report: the folder, then its files
    assert 'epoch' not in out and not (tmp_path/'run').exists() and time.time() - t < 60

def test_user_errors_are_one_line(tmp_path, monkeypatch):
    "Bug 6 (user report): missing --data folder, unknown --arch, --output-stride 7, --max-items 0 printed tracebacks"
    r = console('train', '--data', tmp_path/'nope', '--out', tmp_path/'run', cwd=tmp_path)
    one_line_error(r.returncode, r.stderr, 'nope')
    monkeypatch.chdir(tmp_path)
    for args, words in [(['--arch', 'resnet19'], ['--arch', 'resnet19']), (['--output-stride', '7'], ['--output-stride', '7']),
                        (['--max-items', '0'], ['--max-items', '0']), (['--final-head', 'unet'], ['--final-head', 'unet']),
                        (['--arch', 'tv:lraspp_mobilenet_v3_large', '--final-head', 'fcn'], ['--final-head', 'own final head'])]:
        rc, out, err = cli('train', '--out', 'run', *args, *TINY)
        one_line_error(rc, err, *words)
    assert not (tmp_path/'run').exists()

def test_learning_rates_must_be_positive(tmp_path, monkeypatch, tiny_dls):
    "Bug 7 (user report): `--lr1 -1` and `learn.fit_stage1(1, lr=-1)` were accepted"
    learn = mess_learner(tiny_dls, positions=[2])
    for lr in (-1, 0):
        with pytest.raises(ValueError, match='learning rate'): learn.fit_stage1(1, lr=lr)
    monkeypatch.chdir(tmp_path)
    for opt in ('--lr1', '--lr2'):
        rc, out, err = cli('train', opt, '-1', '--max-items', '2', '--out', 'run', *TINY)
        one_line_error(rc, err, opt, '-1')
    assert not (tmp_path/'run').exists()

def test_no_output_folder_before_the_arguments_are_checked(tmp_path, monkeypatch):
    "Bug 8 (user report): a run that failed on its arguments left an empty output folder behind"
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli('train', '--out', 'run', '--max-items', '2', '--bs', '2', '--size', '32,48', '--epochs1', '1', '--epochs2', '1',
                       '--grid', 'fcn-b0', '--positions', '99')        # only checkable once the backbone is built
    one_line_error(rc, err, '--positions', '99')
    (tmp_path/'taken').mkdir(); (tmp_path/'taken'/'x').write_text('x')
    rc, out, err = cli('train', '--out', 'taken', '--max-items', '2', '--stage1', 'some', *TINY)
    one_line_error(rc, err, '--stage1')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['taken']      # no run/, no taken-2/

@pytest.mark.parametrize('args', [['--help'], ['train', '--help']])
def test_help_prints_no_warning(tmp_path, args):
    "Bug 12 (user report): every `mess_fast` call, even --help, printed a torch.jit.script FutureWarning"
    r = console(*args, cwd=tmp_path)
    assert r.returncode == 0 and r.stderr == '', r.stderr[-3000:]
    assert 'usage: mess_fast' in r.stdout

def _option_blocks(help_text):
    "The help of each option: its first line starts with '  -', continuation lines are indented further"
    blocks, cur = {}, None
    for l in help_text.splitlines():
        m = re.match(r'^  (-[-\w]+)', l)
        if m: cur = m[1]; blocks[cur] = l
        elif cur and l.startswith('    '): blocks[cur] += ' ' + l.strip()
        else: cur = None
    return blocks

def test_help_text_and_version():
    "Bug 13 (user report): `--no-evaluate` read 'Run the early-exit evaluation (default: True)'; `--positions` showed two defaults; -V was not accepted"
    import mess_fast
    rc, out, err = cli('-V')
    assert rc == 0 and out.strip() == f'mess_fast {mess_fast.__version__}'
    for cmd in ('train', 'search', 'predict'):
        rc, out, err = cli(cmd, '--help')
        assert rc == 0
        blocks = _option_blocks(out)
        assert '--out' in blocks or '--data' in blocks, out
        for opt, text in blocks.items():
            assert text.count('(default:') <= 1, (cmd, opt, text)
            if opt.startswith('--no-'):                       # a flag that turns something off must not read as turning it on
                assert '(default: True)' not in text and not re.search(r'\b(Run|Do|Enable)\b', text), (cmd, opt, text)

# ---------------------------------------------------------------- issue 23 (a new user's report): one test per item
def test_masks_of_images_that_share_a_name(run, images, tmp_path):
    "23.1: dir/a.png, dir/c1/a.png and dir/a.jpg all wrote a.png (torch) but a.png, a-2.png, a-3.png (ONNX): one rule for both, the CSV names each mask"
    d = tmp_path/'imgs'; (d/'c1').mkdir(parents=True)
    shutil.copy(images/'more'/'a.png', d/'a.png'); shutil.copy(images/'more'/'b.png', d/'c1'/'a.png')
    Image.open(images/'img1.png').convert('RGB').save(d/'a.jpg')
    files = [d/'a.png', d/'c1'/'a.png', d/'a.jpg']
    rc, out, err = cli('predict', run, *files, '--out', tmp_path/'t')                 # the run folder: its latest deployment
    assert rc == 0, err[-3000:]
    df = pd.read_csv(tmp_path/'t'/'predictions.csv')
    assert df['mask'].nunique() == 3 and all((tmp_path/'t'/m).is_file() for m in df['mask'])
    masks = {m: np.asarray(Image.open(tmp_path/'t'/m)) for m in df['mask']}
    assert masks[df['mask'][0]].shape != masks[df['mask'][1]].shape        # each image's own mask (sizes 96x64 vs 480x360)
    pytest.importorskip('onnxruntime')
    assert cli('export', run, '--out', tmp_path/'onnx')[0] == 0
    rc, out, err = cli('predict', '--onnx', tmp_path/'onnx', *files, '--out', tmp_path/'o')
    assert rc == 0, err[-3000:]
    assert list(pd.read_csv(tmp_path/'o'/'predictions.csv')['mask']) == list(df['mask'])

def test_search_shows_its_progress(run, tmp_path):
    "23.2: the profile, the cache and the search printed nothing while they worked"
    r = console('search', fresh_copy(run, tmp_path/'r'), *QUICK, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    text = r.stdout + r.stderr
    for what in ('profiling', 'caching', 'searching'): assert what in text
    assert re.search(r'\[\d+/\d+ [^\]]*configurations\]', text), text[-2000:]   # fastprogress: done/total, ETA, the number of configurations

def test_predict_names_a_fastai_learner(run, images, tmp_path, monkeypatch):
    "23.4: `predict RUN/learner.pkl IMG` answered with torch's 9-line weights_only warning"
    monkeypatch.chdir(tmp_path)
    (tmp_path/'learner.pkl').write_bytes(b'\x80\x04not really a learner')
    rc, out, err = cli('predict', tmp_path/'learner.pkl', images/'img1.png', '--out', 'o')
    one_line_error(rc, err, 'learner.pkl', 'fastai Learner', 'deployed.pth')
    assert 'weights_only' not in err and not (tmp_path/'o').exists()

def test_one_training_frame_is_one_message(tmp_path, monkeypatch):
    "23.5: a 1-frame training split warned 'using bs=1', then failed on bs 2: one message, with the minimum"
    ds = segnet_ds(tmp_path/'ds', n_train=1)
    monkeypatch.chdir(tmp_path)
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('error')                                     # the old 'using bs=1' warning would be an exception here
        rc, out, err = cli('train', '--data', ds, '--out', 'run', *TINY)
    one_line_error(rc, err, '1 training pair', 'at least 2')
    assert not (tmp_path/'run').exists()

def test_ctrl_c_is_one_line(run, tmp_path, monkeypatch):
    "23.6: Ctrl-C printed a 25-line KeyboardInterrupt traceback; one line says what was kept and how to start again"
    from mess_fast import jobs
    def interrupted(*a, **k): raise KeyboardInterrupt
    monkeypatch.setattr(jobs, 'build_cache', interrupted)   # the search job's cache, interrupted
    r = fresh_copy(run, tmp_path/'r')
    before = sorted(p.name for p in r.rglob('*'))
    rc, out, err = cli('search', r, *QUICK)
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 130 and len(lines) == 1 and 'Traceback' not in err, err[-2000:]
    assert 'interrupted' in lines[0] and f'mess_fast search {r}' in lines[0]
    assert sorted(p.name for p in r.rglob('*')) == before                  # nothing half-written: no search-2/

@pytest.mark.parametrize('opt', ['--th-img', '--th-pix'])
def test_negative_first_values_reach_the_range_check(run, tmp_path, monkeypatch, opt):
    "23.7: `--th-img -0.1,0.5` was eaten by argparse ('expected one argument') before the range check"
    monkeypatch.chdir(tmp_path)
    a = cli('search', run, opt, '-0.1,0.5')
    b = cli('search', run, f'{opt}=-0.1,0.5')
    one_line_error(a[0], a[2], opt, '-0.1')
    assert a == b

def test_search_given_a_file(run, tmp_path, monkeypatch):
    "23.8: `mess_fast search <existing file>` said 'no such run folder'"
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli('search', run/'model.pth')
    one_line_error(rc, err, 'model.pth', 'is a file', 'run folder')

def test_export_opset_range(run, tmp_path, monkeypatch):
    "23.9: `export --opset 3` showed torch's bare error"
    monkeypatch.chdir(tmp_path)
    rc, out, err = cli('export', run, '--opset', '3', '--out', 'o')
    one_line_error(rc, err, '--opset', '3', '11..23')
    assert not (tmp_path/'o').exists()

def test_budgeted_deployment_keeps_only_what_it_runs(run, tmp_path):
    "23.9: a budgeted deployed.pth held the whole network; deployed checkpoints carry a checksum"
    from mess_fast.model import read_checkpoint
    res, _ = result_of(run/'search')
    net = MESSNet.load(run/'model.pth')
    res.deploy(ExitConfig(budget='2:fcn-b0'), net, path=tmp_path/'b.pth'); p = tmp_path/'b.pth'
    assert p.stat().st_size < 0.5 * (run/'model.pth').stat().st_size
    assert 'sha256' in read_checkpoint(p)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    got, want = EarlyExitPredictor.load(p).predict_batch(x), res.deploy(ExitConfig(budget='2:fcn-b0'), net).predict_batch(x)
    assert got['exits'] == want['exits'] == ['2:fcn-b0'] * 2 and torch.equal(got['masks'], want['masks'])

def test_quick_first_run_is_small(tmp_path, monkeypatch):
    "23.10: `mess_fast train` with no arguments wrote 144 MB (the network twice, DeepLab's final head and ASPP exits)"
    import json
    from mess_fast.core import defaults
    monkeypatch.chdir(tmp_path); monkeypatch.delenv('MESS_FAST_DATA', raising=False)   # no dataset named: the quick run
    rc, out, err = cli('train', '--epochs1', '1', '--epochs2', '1', '--max-items', '8')   # the quick run, shorter
    assert rc == 0, err[-2000:]
    run = tmp_path/'mess_run'
    args = json.loads((run/'run.json').read_text())['args']
    assert args['quick'] and args['final_head'] == defaults.quick_final_head == 'fcn'
    assert args['grid'] == list(defaults.quick_grid) and args['positions'] == list(defaults.quick_positions)
    net = MESSNet.load(run/'model.pth')
    assert net.config['final_head'] == 'fcn' and len(net.heads) == len(defaults.quick_grid) * len(defaults.quick_positions)
    assert 'fcn final head' in out
    total = sum(p.stat().st_size for p in run.rglob('*') if p.is_file())
    assert total < 100e6, f"the quick run wrote {total / 1e6:.1f} MB"

# ---------------------------------------------------------------- issue 25: a stream that checks itself
def test_predict_audits_and_its_state(run, images, tmp_path):
    "`predict --audit --alpha --seed --state`: trace.csv and trace.png; a second call continues the first exactly as one call over both"
    import json
    res, _ = result_of(run/'search')
    res.deploy(ExitConfig(('2:fcn-b0', '5:fcn-b0'), (0.5, 0.5), (0.3, 0.3)), MESSNet.load(run/'model.pth'), path=tmp_path/'early.pth')
    frames = [images/'img1.png', images/'img2.jpg', images/'more'/'a.png', images/'more'/'b.png']
    opts = ['--audit', '0.5', '--alpha', '0.05', '--seed', '3']
    rc, out, err = cli('predict', tmp_path/'early.pth', *frames, *opts, '--out', tmp_path/'all')
    assert rc == 0, err[-2000:]
    whole = pd.read_csv(tmp_path/'all'/'trace.csv')
    assert (tmp_path/'all'/'trace.png').stat().st_size > 0 and len(whole) == 4
    assert {'image', 'exit', 'audited', 'loss', 'theta', 'theta_after', 'window_risk', 'flag'} <= set(whole.columns)
    st = tmp_path/'state.json'
    for part, fs in (('p1', frames[:2]), ('p2', frames[2:])):
        rc, out, err = cli('predict', tmp_path/'early.pth', *fs, *opts, '--state', st, '--out', tmp_path/part)
        assert rc == 0, err[-2000:]
        assert ('continuing the controller saved in state.json' in out) == (part == 'p2')   # it says whose settings apply
    assert json.loads(st.read_text())['frames'] == 4
    parts = pd.concat([pd.read_csv(tmp_path/p/'trace.csv') for p in ('p1', 'p2')], ignore_index=True)
    cols = ['exit', 'audited', 'theta', 'theta_after']
    pd.testing.assert_frame_equal(parts[cols], whole[cols])
    assert list(parts.frame) == [0, 1, 2, 3]
    (tmp_path/'bad.json').write_text('{"no": "state"}')
    one_line_error(*err_of(cli('predict', tmp_path/'early.pth', frames[0], '--state', tmp_path/'bad.json', '--out', tmp_path/'b')), 'bad.json', 'not a controller state')
    one_line_error(*err_of(cli('predict', tmp_path/'early.pth', frames[0], '--audit', '1.5', '--out', tmp_path/'c')), '--audit', '1.5')
    # by default the offset never goes below the deployed thresholds (--theta-min 0); --theta-min -1 lets a loose
    # target pull it down
    loose = ['--audit', '1', '--alpha', '0.99']
    rc, out, err = cli('predict', tmp_path/'early.pth', *frames, *loose, '--theta-min', '-1', '--out', tmp_path/'down')
    assert rc == 0, err[-2000:]
    assert (pd.read_csv(tmp_path/'down'/'trace.csv').theta_after < 0).all()
    rc, out, err = cli('predict', tmp_path/'early.pth', *frames, *loose, '--state', tmp_path/'floor.json', '--out', tmp_path/'floor')
    assert rc == 0, err[-2000:]
    assert (pd.read_csv(tmp_path/'floor'/'trace.csv').theta_after == 0).all()
    # the default step is 5 x the deployed thresholds' span (th_img 0.3: span 0.7); --gamma sets it
    assert json.loads((tmp_path/'floor.json').read_text())['gamma'] == pytest.approx(step_size(ExitPolicy(th_img=0.3))) == pytest.approx(3.5)
    rc, out, err = cli('predict', tmp_path/'early.pth', frames[0], *loose, '--gamma', '0.2', '--state', tmp_path/'g.json', '--out', tmp_path/'g')
    assert rc == 0 and json.loads((tmp_path/'g.json').read_text())['gamma'] == 0.2, err[-2000:]
    one_line_error(*err_of(cli('predict', tmp_path/'early.pth', frames[0], '--audit', '0.5', '--theta-min', '0.5', '--out', tmp_path/'d')), '--theta-min', '0.5')
