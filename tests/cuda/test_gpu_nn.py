"""gridconv.nn on a CUDA device: every layer, the losses, metrics, optimisers and the
training loop give on the device what they give on the host.

Run by tests/test_cuda.py in a process of its own, under the CUDA simulator (no GPU) or
on a GPU. Shapes are tiny (the simulator runs every GPU thread as a Python thread).
"""

from __future__ import annotations

import copy

import h5py
import numpy as np
import pytest
from numba import cuda

import gridconv as gc
from gridconv import nn
from gridconv._cuda import nn as cnn

RNG = np.random.default_rng(4321)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def d(a):
    return cuda.to_device(np.ascontiguousarray(a))


def h(a):
    return gc.to_host(a)


def close(got, want, tol=None, floor=1e-30):
    assert gc.backends()["cuda"]["available"]
    assert not isinstance(got, np.ndarray), "the result came back to the host"
    got = h(got)
    want = np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape,
                                                                 got.dtype, want.dtype)
    if tol is None:
        tol = 2e-6 if want.dtype == np.float32 else 1e-12
    scale = max(float(np.abs(want).max()), floor) if want.size else 1.0
    err = float(np.abs(got.astype(np.float64) - want).max()) / scale if want.size else 0.0
    assert err <= tol, f"relative error {err:.3g}"


def twins(layer):
    """The layer and a deep copy of it on the device."""
    return layer, copy.deepcopy(layer).to_device()


def check_layer(layer, x, *, input_grad=True):
    """Forward and backward on the host and on the device; outputs, input gradients,
    parameter gradients and buffers agree, and stay on the device."""
    host, dev = twins(layer)
    y = host.forward(x)
    yd = dev.forward(d(x))
    close(yd, y)
    g = rand(*y.shape)
    gx = host.backward(g, input_grad=input_grad)
    gxd = dev.backward(d(g), input_grad=input_grad)
    if gx is None:
        assert gxd is None
    else:
        close(gxd, gx)
    for (_, p), (_, q) in zip(host.named_parameters(), dev.named_parameters()):
        close(q.value, p.value)
        close(q.grad, p.grad)
    for (_, b), (_, c) in zip(host.named_buffers(), dev.named_buffers()):
        close(c, b)
    return host, dev


LAYERS = [
    (lambda: nn.Conv2d(2, 3, 3, padding=1, rng=1), (2, 2, 4, 3)),
    (lambda: nn.Conv1d(2, 2, 3, stride=2, padding="same", padding_mode="reflect", rng=1),
     (1, 2, 7)),
    (lambda: nn.Conv3d(1, 2, 2, bias=False, rng=1), (1, 1, 3, 3, 2)),
    (lambda: nn.ConvTranspose2d(2, 2, 2, stride=2, rng=1), (1, 2, 2, 3)),
    (lambda: nn.UnsharedConv(1, 2, 2, 3, input_size=5, rng=1), (2, 2, 5)),
    (lambda: nn.TiledConv(1, 2, 2, 2, tiles=2, rng=1), (1, 2, 6)),
    (lambda: nn.MaxPool(2), (1, 2, 4, 5)),
    (lambda: nn.AvgPool(2, padding=1), (1, 2, 3, 4)),
    (lambda: nn.LpPool(2, 2), (1, 2, 4, 4)),
    (lambda: nn.GlobalAvgPool(), (2, 3, 3, 2)),
    (lambda: nn.GlobalMaxPool(), (2, 3, 5)),
    (lambda: nn.ReLU(), (2, 3, 5)),
    (lambda: nn.LeakyReLU(negative_slope=0.2), (2, 3, 5)),
    (lambda: nn.PReLU(3), (2, 3, 5)),
    (lambda: nn.AbsRectify(), (2, 3, 5)),
    (lambda: nn.Sigmoid(), (2, 3, 5)),
    (lambda: nn.Tanh(), (2, 3, 5)),
    (lambda: nn.Softmax(), (2, 3, 5)),
    (lambda: nn.LogSoftmax(), (2, 3, 5)),
    (lambda: nn.BatchNorm(3), (2, 3, 5)),
    (lambda: nn.BatchNorm(3, affine=False), (3, 3, 2, 2)),
    (lambda: nn.BatchNorm(4), (5, 4)),
    (lambda: nn.Dropout(0.5), (2, 3, 4)),  # eval mode below: the identity
    (lambda: nn.Flatten(), (2, 3, 2, 2)),
    (lambda: nn.Dense(13, 9, rng=1), (5, 13)),  # several GEMM tiles, ragged edges
    (lambda: nn.Dense(3, 2, bias=False, rng=1), (2, 3)),
    (lambda: nn.Upsample(2), (1, 2, 3, 2)),
    (lambda: nn.Upsample((2, 3), mode="linear"), (1, 2, 3, 2)),
    (lambda: nn.Upsample(2, mode="linear"), (1, 1, 2, 2, 3)),
    (lambda: nn.Residual(nn.Sequential(nn.Conv1d(2, 2, 3, padding=1, rng=2), nn.Tanh())),
     (2, 2, 5)),
    (lambda: nn.Residual(nn.ReLU(), nn.Conv1d(2, 2, 1, rng=3)), (1, 2, 4)),
    (lambda: nn.SkipConcat(nn.Sequential(nn.AvgPool(2), nn.Conv1d(2, 3, 1, rng=2),
                                         nn.Upsample(2))), (1, 2, 4)),
]


def _layer_id(case) -> str:
    layer = case[0]()
    inner = "".join(type(m).__name__[:4] for m in list(layer.modules())[1:])
    return f"{type(layer).__name__}{'(' + inner + ')' if inner else ''}-{len(case[1]) - 2}d"


@pytest.mark.parametrize("make, shape", LAYERS, ids=[_layer_id(c) for c in LAYERS])
def test_layer_on_device_equals_host(make, shape):
    layer = make()
    if isinstance(layer, nn.Dropout):
        layer.eval()
    check_layer(layer, rand(*shape))


def test_eval_mode_batchnorm_and_no_input_grad():
    layer = nn.BatchNorm(2)
    layer.buffers["running_mean"][:] = [0.5, -1]
    layer.buffers["running_var"][:] = [2, 0.25]
    layer.eval()
    check_layer(layer, rand(2, 2, 3))
    check_layer(nn.Conv1d(2, 3, 2, rng=5), rand(2, 2, 4), input_grad=False)
    check_layer(nn.Dense(4, 3, rng=5), rand(2, 4), input_grad=False)


def test_dropout_on_device():
    layer = nn.Dropout(0.4, seed=3).to_device()
    x = rand(3, 4, 50)
    y = layer.forward(d(x))
    mask = h(layer._mask)
    assert set(np.unique(mask)) <= {0, np.float32(1 / 0.6)}
    assert 0.45 < (mask > 0).mean() < 0.75
    close(y, x * mask)
    g = rand(*x.shape)
    close(layer.backward(d(g)), g * mask)
    # The mask is the documented hash of the element index and two seeds from the layer's
    # generator: reproducible from the seed.
    s1, s2 = (int(s) for s in np.random.default_rng(3).integers(0, 2**32, size=2))
    keep = cnn.dropout_keep(x.size, s1, s2, int(round(0.4 * (1 << 24))))
    np.testing.assert_array_equal(mask.ravel() > 0, keep)
    assert (h(layer.forward(d(x))) != h(y)).any()  # a fresh mask every batch
    layer.eval()
    close(layer.forward(d(x)), x)


def test_dense_gemm_against_numpy_on_larger_shapes():
    a, b = rand(19, 11), rand(23, 11)
    close(cnn.matmul(d(a), d(b), trans_b=True), a @ b.T, 1e-5)
    c = rand(11, 23)
    out = d(c)
    got = cnn.matmul(d(a), d(a), trans_a=True)
    close(got, a.T @ a, 1e-5)
    g = rand(19, 23)
    cnn.matmul(d(a), d(g), trans_a=True, out=out)
    close(out, c + a.T @ g, 1e-5)
    close(cnn.matmul(d(a.astype(np.float64)), d(b.T.astype(np.float64))),
          a.astype(np.float64) @ b.T.astype(np.float64))


# ------------------------------------------------------------------------------ losses


def test_cross_entropy_with_class_weights_per_sample_and_per_voxel():
    w = [0.5, 2.0, 1.0]
    for shape, tshape in [((4, 3), (4,)), ((2, 3, 2, 3, 2), (2, 2, 3, 2))]:
        logits = rand(*shape)
        target = RNG.integers(0, 3, tshape)
        for loss in (nn.CrossEntropy(), nn.CrossEntropy(class_weights=w)):
            value, grad = loss(logits, target)
            dv, dg = loss(d(logits), d(target))
            assert isinstance(dv, float)
            assert np.isclose(dv, value, rtol=1e-6)
            close(dg, grad)
            dv, dg = loss(d(logits), target)  # host labels are copied over
            assert np.isclose(dv, value, rtol=1e-6)
            close(dg, grad)
    with pytest.raises(ValueError, match=r"CrossEntropy: `target` classes must be in \[0, 3\)"):
        nn.CrossEntropy()(d(rand(2, 3)), d(np.array([0, 3])))
    with pytest.raises(ValueError, match="CrossEntropy: `class_weights`"):
        nn.CrossEntropy(class_weights=[1, 2])(d(rand(2, 3)), d(np.array([0, 1])))
    with pytest.raises(ValueError, match="CrossEntropy: `target` must hold one class"):
        nn.CrossEntropy()(d(rand(2, 3)), d(np.array([0, 1, 1])))


def test_mse_dice_and_their_sum():
    out, tgt = rand(2, 3, 4), rand(2, 3, 4)
    v, g = nn.MSE()(out, tgt)
    dv, dg = nn.MSE()(d(out), d(tgt))
    assert np.isclose(dv, v, rtol=1e-6)
    close(dg, g)
    logits = rand(2, 3, 3, 4)
    labels = RNG.integers(0, 3, (2, 3, 4))
    loss = nn.CrossEntropy(class_weights=[1, 3, 2]) + nn.Dice()
    v, g = loss(logits, labels)
    dv, dg = loss(d(logits), d(labels))
    assert np.isclose(dv, v, rtol=1e-6)
    close(dg, g)
    with pytest.raises(ValueError, match=r"Dice: `target` classes must be in \[0, 3\)"):
        nn.Dice()(d(logits), d(labels + 5))


def test_metrics_on_device_predictions():
    logits = rand(6, 4)
    labels = RNG.integers(0, 4, 6)
    assert nn.accuracy(d(logits), d(labels)) == nn.accuracy(logits, labels)
    assert nn.accuracy(d(logits), labels) == nn.accuracy(logits, labels)
    seg = rand(2, 3, 4, 5)
    lab = RNG.integers(0, 3, (2, 4, 5))
    assert nn.mean_dice(d(seg), d(lab)) == nn.mean_dice(seg, lab)
    np.testing.assert_array_equal(nn.dice_scores(d(lab), d(lab), 3),
                                  nn.dice_scores(lab, lab, 3))


# --------------------------------------------------------------- models and training


def small_model(seed=0):
    rng = np.random.default_rng(seed)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1, bias=False, rng=rng), nn.BatchNorm(4), nn.ReLU(),
        nn.MaxPool(2),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, rng=rng), nn.ReLU())),
        nn.SkipConcat(nn.Sequential(nn.Conv2d(4, 2, 1, rng=rng), nn.Tanh())),
        nn.Flatten(), nn.Dense(24, 3, rng=rng))


@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_training_steps_on_device_equal_host(opt):
    """float64, so that the two sides agree to rounding after several steps."""
    host = small_model().astype(np.float64)
    dev = copy.deepcopy(host).to_device()
    x = RNG.standard_normal((3, 1, 4, 4))
    y = np.array([0, 2, 1])
    loss = nn.CrossEntropy(class_weights=[1.0, 2.0, 0.5])

    def make(model):
        if opt == "sgd":
            return nn.SGD(model, lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2)
        return nn.Adam(model, lr=0.01, weight_decay=1e-2)

    oh, od = make(host), make(dev)
    xd, yd = d(x), d(y)
    for _ in range(2):
        for model, o, xx, yy in ((host, oh, x, y), (dev, od, xd, yd)):
            o.zero_grad()
            out = model.forward(xx)
            value, g = loss(out, yy)
            model.backward(g, input_grad=False)
            o.step()
            model.last = value
        assert np.isclose(dev.last, host.last, rtol=1e-12)
    for (_, p), (_, q) in zip(host.named_parameters(), dev.named_parameters()):
        close(q.value, p.value, 1e-10, floor=1e-3)
    for (_, b), (_, c) in zip(host.named_buffers(), dev.named_buffers()):
        close(c, b, 1e-10, floor=1e-3)
    state = od.state()
    assert all(isinstance(v, np.ndarray) for v in state.values())
    for k, v in oh.state().items():
        np.testing.assert_allclose(state[k], v, rtol=1e-8, atol=1e-12)


def test_to_device_to_host_round_trip_and_where():
    model = small_model(1)
    model.forward(rand(2, 1, 4, 4))  # some running statistics
    before = model.state()
    assert model.device == "cpu"
    assert model.to_device() is model
    assert model.device == "cuda" and model[4].device == "cuda"
    for p in model.parameters():
        assert not isinstance(p.value, np.ndarray) and not isinstance(p.grad, np.ndarray)
    assert not isinstance(model[1].buffers["running_var"], np.ndarray)
    state = model.state()  # NumPy copies
    assert state.keys() == before.keys()
    for k in before:
        assert isinstance(state[k], np.ndarray)
        np.testing.assert_array_equal(state[k], before[k])
    model.load_state({k: v * 2 for k, v in before.items()})
    assert model.device == "cuda"
    np.testing.assert_array_equal(h(model[0].weight.value), before["params/0.weight"] * 2)
    assert model.to_host() is model and model.device == "cpu"
    for p in model.parameters():
        assert isinstance(p.value, np.ndarray) and isinstance(p.grad, np.ndarray)
    np.testing.assert_array_equal(model[1].buffers["running_mean"],
                                  before["buffers/1.running_mean"] * 2)
    model.to_device().astype(np.float64)
    assert model.dtype == np.float64 and model.device == "cuda"


def test_mixing_host_and_device_is_a_type_error_naming_the_layer():
    model = small_model().to_device()
    with pytest.raises(TypeError, match=r"Conv2d: the input is a NumPy \(host\) array but "
                                        r"the layer's parameters are on the CUDA device"):
        model.forward(rand(1, 1, 4, 4))
    host = nn.Sequential(nn.Flatten(), nn.Dense(16, 2))
    with pytest.raises(TypeError, match=r"Dense: the input is a CUDA device array but the "
                                        r"layer's parameters are on the host"):
        host.forward(d(rand(1, 1, 4, 4)))
    bn = nn.BatchNorm(2).to_device()
    bn.forward(d(rand(2, 2, 3)))
    with pytest.raises(TypeError, match="BatchNorm: the gradient is a NumPy"):
        bn.backward(rand(2, 2, 3))


def test_fit_evaluate_predict_on_device_and_checkpoints(tmp_path):
    x = RNG.standard_normal((6, 1, 4, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2])
    kw = dict(loss=nn.CrossEntropy(), optimizer="sgd", lr=0.05, epochs=1, batch_size=3,
              metrics=["accuracy"], shuffle=True, seed=1, progress=False, verbose=False)
    host = nn.Sequential(nn.Conv2d(1, 2, 3, bias=False, rng=2), nn.BatchNorm(2), nn.ReLU(),
                         nn.GlobalAvgPool(), nn.Flatten(), nn.Dense(2, 3, rng=2))
    dev = copy.deepcopy(host)
    hh = nn.fit(host, (x, y), **kw)
    hd = nn.fit(dev, (x, y), device="cuda", checkpoint=tmp_path / "run.h5", **kw)
    assert dev.device == "cuda"
    assert np.isclose(hd["loss"][0], hh["loss"][0], rtol=1e-5)
    assert hd["accuracy"] == hh["accuracy"]
    for (_, p), (_, q) in zip(host.named_parameters(), dev.named_parameters()):
        close(q.value, p.value, 1e-4, floor=1e-2)
    res = nn.evaluate(dev, (x, y), loss=nn.CrossEntropy())
    ref = nn.evaluate(host, (x, y), loss=nn.CrossEntropy())
    assert np.isclose(res["loss"], ref["loss"], rtol=1e-4)
    out = nn.predict(dev, x, batch_size=4)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, nn.predict(host, x), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(nn.predict(dev, d(x), batch_size=4), out, rtol=1e-6)
    # The saved file is the one a host model gives: same datasets, shapes and dtypes.
    nn.save(tmp_path / "dev.h5", dev)
    nn.save(tmp_path / "host.h5", host)

    def layout(path):
        out = {}
        with h5py.File(path, "r") as f:
            f.visititems(lambda k, v: out.__setitem__(k, (v.shape, v.dtype))
                         if isinstance(v, h5py.Dataset) else None)
            out["attrs"] = f.attrs["model"]
        return out

    assert layout(tmp_path / "dev.h5") == layout(tmp_path / "host.h5")
    assert "optimizer/velocity/0" in layout(tmp_path / "run.h5")
    back = nn.load(tmp_path / "dev.h5", device="cuda")
    assert back.device == "cuda"
    np.testing.assert_allclose(nn.predict(back, x), out, rtol=1e-6)
    assert nn.load(tmp_path / "dev.h5").device == "cpu"


def test_optimizer_made_before_the_move_follows_the_parameters():
    model = nn.Sequential(nn.Dense(3, 2, rng=0))
    ref = copy.deepcopy(model)
    opt, ro = nn.Adam(model, lr=0.1), nn.Adam(ref, lr=0.1)
    model.to_device()
    x = rand(4, 3)
    for m, o, xx in ((model, opt, d(x)), (ref, ro, x)):
        o.zero_grad()
        m.backward(nn.MSE()(m.forward(xx), np.zeros((4, 2), np.float32))[1])
        o.step()
    close(model[0].weight.value, ref[0].weight.value, 1e-6)
    assert not isinstance(opt.m[0], np.ndarray)


def test_grad_cam_with_a_device_model():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1, rng=0), nn.ReLU(),
                          nn.GlobalAvgPool(), nn.Flatten(), nn.Dense(2, 3, rng=0))
    x = rand(1, 1, 4, 4)
    cam, cls = nn.grad_cam(model, x)
    cam_d, cls_d = nn.grad_cam(copy.deepcopy(model).to_device(), x)
    np.testing.assert_array_equal(cls_d, cls)
    np.testing.assert_allclose(cam_d, cam, rtol=1e-5, atol=1e-6)
