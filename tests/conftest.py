"""The tiny data, networks, caches and latency profiles the tests share, built by `mess_fast.fixtures` (as the notebooks build them).

Session fixtures are built once; a test that changes what it gets (adds exits, trains, moves thresholds) builds its own with
`mess_fast.fixtures` instead. `tiny_net` checks at the end of the session that no test changed it."""
import pytest

@pytest.fixture(scope='session')
def tiny_dls():
    "8 frames per split of the embedded CamVid subset at 64x96, batches of 4 (`mess_fast.fixtures.tiny_dls()`)"
    from mess_fast.fixtures import tiny_dls
    return tiny_dls()

@pytest.fixture(scope='session')
def tiny_net():
    "The untrained ResNet-18 `MESSNet` with `TINY_HEADS` (output stride 32, random BatchNorm statistics, evaluation mode); read only"
    from mess_fast.fixtures import tiny_net
    from mess_fast.model import state_sha256
    net = tiny_net()
    before = (state_sha256(net.state_dict()), net.exit_keys)
    yield net
    assert (state_sha256(net.state_dict()), net.exit_keys) == before and not net.training and net.active is None, \
        "a test changed the shared tiny_net: build your own with mess_fast.fixtures.tiny_net()"

@pytest.fixture(scope='session')
def tiny_dl(tiny_dls):
    "The validation frames of `tiny_dls`, labelled, batches of 4 (the calibration loader of `tiny_cache`)"
    from mess_fast.loaders import labelled_dl
    return labelled_dl(tiny_dls, tiny_dls.source.valid, bs=4)

@pytest.fixture(scope='session')
def tiny_cache(tiny_net, tiny_dls):
    "The `ExitCache` of `tiny_net` on the validation frames of `tiny_dls`, at `TINY_TH_PIX`"
    from mess_fast.fixtures import tiny_cache
    return tiny_cache(tiny_net, tiny_dls)[0]

@pytest.fixture(scope='session')
def tiny_prof(tiny_net):
    "A (quick, noisy) latency profile of `tiny_net` at 64x96"
    from mess_fast.profile import profile_net
    return profile_net(tiny_net, (64, 96), reps=2, warmup=1, progress=False)

@pytest.fixture
def synth_cache():
    "`mess_fast.fixtures.synthetic_cache()`: 40 images over `SYNTH_KEYS`, chosen numbers (cheap: one per test)"
    from mess_fast.fixtures import synthetic_cache
    return synthetic_cache()

@pytest.fixture
def synth_prof():
    "`mess_fast.fixtures.hand_profile()`: round latencies for `SYNTH_KEYS`"
    from mess_fast.fixtures import hand_profile
    return hand_profile()
