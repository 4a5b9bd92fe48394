"""Certified picks (issue 24): the guarantee checked by simulation on synthetic caches whose true risk is known, the
p-values and bounds against their definitions, fixed-sequence testing against brute force, clips, and edge cases."""
import numpy as np, pytest
from mess_fast.core import FINAL
from mess_fast.cache import ExitConfig, flops_costs
from mess_fast.search import search
from mess_fast.certify import clip_units, pvalue, upper_bound, fixed_sequence_test, certify, BOUNDS
from mess_fast.fixtures import synthetic_cache

SETTINGS = dict(th_pix=[0.5, 0.9], th_img=[0.2, 0.5, 0.8], max_exits=1)

@pytest.fixture(scope='module')
def population(): return synthetic_cache(n=4000, seed=99)      # the 'true' distribution: the true risk of any configuration

def test_certified_picks_keep_their_promise(population):
    "Over 120 calibration draws the certified pick's true risk exceeds alpha on at most delta of them (+ binomial slack); the naive pick's does far more often"
    alpha, delta, n = 0.32, 0.2, 120
    true_risk = lambda cfg: population.evaluate(cfg)['disagreement']
    viol, naive = [], []
    for s in range(n):
        cal = synthetic_cache(n=200, seed=5000 + s)
        ce = certify(cal, {'flops': flops_costs(cal)}, SETTINGS | dict(heads=cal.heads), alpha, delta, clip=5, cost='flops', seed=s)
        viol.append(true_risk(ce.config) > alpha)
        r = search(cal, max_exits=1, th_img=SETTINGS['th_img'], th_pix=SETTINGS['th_pix'], accuracy='agreement', progress=False)
        ok = [c for c in r.fronts['flops'] if r.evaluate(c)['disagreement'] <= alpha]
        naive.append(bool(ok) and true_risk(ok[0]) > alpha)
    rate, slack = np.mean(viol), 2.5 * np.sqrt(delta * (1 - delta) / n)
    assert rate <= delta + slack, (rate, delta)
    assert np.mean(naive) > rate + 0.1, (np.mean(naive), rate)               # the winner's curse, measured (25% here vs 0%)

@pytest.mark.parametrize('bound', BOUNDS)
def test_pvalues_are_valid_and_powerful(bound):
    "At a true mean equal to alpha the test rejects at most delta of the time; well below alpha it rejects most of the time"
    rng = np.random.default_rng(0)
    at = np.mean([pvalue(rng.random(60) < 0.2, 0.2, bound, 0.1, s) <= 0.1 for s in range(300)])
    below = np.mean([pvalue(rng.random(60) * 0.1, 0.2, bound, 0.1, s) <= 0.1 for s in range(100)])
    assert at <= 0.1 + 2.5 * np.sqrt(0.09 / 300) and below > 0.8, (at, below)

@pytest.mark.parametrize('bound', BOUNDS)
def test_upper_bound(bound):
    "The certified bound is above the mean, shrinks with more clips, and zero losses on n clips reach 1 - delta^(1/n) at best"
    rng = np.random.default_rng(1)
    l = rng.random(200) * 0.2
    b50, b200 = upper_bound(l[:50], 0.1, bound), upper_bound(l, 0.1, bound)
    assert l.mean() < b200 < b50 <= 1
    for n in (10, 45):
        assert upper_bound(np.zeros(n), 0.1, 'hb') == pytest.approx(1 - 0.1 ** (1 / n), abs=2e-3)
    assert upper_bound(np.ones(20), 0.1, bound) == 1.

def test_fixed_sequence_against_brute_force():
    rng = np.random.default_rng(2)
    for _ in range(300):
        p, d = rng.random(rng.integers(0, 8)) ** 2, rng.choice([0.05, 0.1, 0.3])
        want = next((i for i, x in enumerate(p) if x > d), len(p))
        assert fixed_sequence_test(p, d) == want

def test_clips_follow_sequences_and_frames():
    names = [f'0006R0_f{i:05d}.png' for i in (30, 0, 60, 90, 120)] + [f'0001TP_{i:06d}.png' for i in (10, 20, 30)]
    u = clip_units(names, 2)
    assert len(set(u)) == 5                                          # 0001TP: 3 frames -> 2 clips; 0006R0: 5 frames -> 3 clips
    by = {n: c for n, c in zip(names, u)}
    assert by['0006R0_f00000.png'] == by['0006R0_f00030.png'] != by['0006R0_f00060.png']
    assert by['0001TP_000010.png'] == by['0001TP_000020.png'] and by['0001TP_000030.png'] not in {by[n] for n in names if n.startswith('0006R0')}

def test_edge_cases(population):
    cal = synthetic_cache(n=60, seed=4)
    costs, st = {'flops': flops_costs(cal)}, SETTINGS | dict(heads=cal.heads)
    none = certify(cal, costs, st, alpha=0.001, delta=0.1, clip=5, cost='flops')   # nothing can be that good
    assert not none.certified and none.config == ExitConfig(budget=FINAL) and none.alpha_min > 0.001
    assert 'nothing certified' in none.promise
    with pytest.raises(ValueError, match='at least 2'): certify(cal, costs, st, alpha=0.1, clip=1000, cost='flops')
    with pytest.raises(ValueError): certify(cal, costs, st, alpha=0.1, delta=1.5, cost='flops')
    easy = certify(cal, costs, st, alpha=0.99, delta=0.1, clip=5, cost='flops')
    assert easy.certified and easy.config.budget != FINAL and easy.risk_bound <= 0.99
