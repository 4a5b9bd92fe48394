"Model invariants that are too broad for the notebook: every backbone x every head, odd sizes, save/load, timm, offline."
import socket, time
import pytest, torch
from mess_fast.model import *

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
    torch.manual_seed(2)
    net = MESSNet('resnet18', n_classes=5, output_stride=16, exits=['1:fcn-crm-b1', '6:aspp-b0'])
    with torch.no_grad():  # give BN buffers non-default values so that a missed buffer would show
        net.train(); net(torch.randn(2, 3, 64, 64))
    net.eval(); x = torch.randn(1, 3, 97, 131)
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
    (tmp_path/'junk.pth').write_text('not a checkpoint')
    with pytest.raises(ValueError, match='junk.pth is not a readable MESSNet checkpoint'): MESSNet.load(tmp_path/'junk.pth')
    torch.save({'a': torch.zeros(1)}, tmp_path/'sd.pth')
    with pytest.raises(ValueError, match='sd.pth is not a MESSNet checkpoint'): MESSNet.load(tmp_path/'sd.pth')

def test_cost_table_adds_up():
    "Stage FLOPs plus the final head equal the plain network's, for a ResNet and a MobileNet."
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead
    for arch, kw in [('resnet50', dict(output_stride=8)), ('mobilenet_v3_large', {})]:
        net = MESSNet(arch, n_classes=12, exits=['3:fcn-b0'], **kw)
        ct = net.cost_table((97, 131))
        body = body_of(arch, output_stride=kw.get('output_stride')).eval()
        head = DeepLabHead(net.candidates[-1].channels, 12).eval()
        plain = count_flops(lambda x: head(body(x)), torch.zeros(1, 3, 97, 131))
        assert round(ct[ct.kind != 'head'].gflops.sum() * 1e9) == plain
        assert ct.set_index('key').loc['3:fcn-b0', 'cum_gflops'] == pytest.approx(ct.cum_gflops[3] + ct.set_index('key').loc['3:fcn-b0', 'gflops'])

def test_head_names_round_trip_and_reject():
    for c in head_grid(): assert HeadConfig.from_name(c.name) == c
    for bad in ['fcn', 'fcn-b', 'deeplab-b0', 'fcn-rdi-b1', 'fcn-b0-rdi']:
        with pytest.raises(ValueError): HeadConfig.from_name(bad)

def test_timm_backbones():
    pytest.importorskip('timm')
    for a, n in [('timm:resnet18', 8), ('timm:mobilenetv3_large_100', 15)]:
        net = MESSNet(a, n_classes=3, exits=['0:fcn-b0', '2:aspp-crm-b1']).eval()
        assert len(net.candidates) == n
        with torch.no_grad(): out = net(torch.randn(1, 3, 97, 131))
        assert all(tuple(v.shape) == (1, 3, 97, 131) for v in out.values())
    assert MESSNet('timm:resnet18', output_stride=8).candidates[-1].stride == 8

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
