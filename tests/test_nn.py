"""gridconv.nn: whole-model gradients against finite differences, layers, losses,
optimisers, save/load/resume, builders and Grad-CAM."""

import numpy as np
import pytest

from gridconv import nn

RNG = np.random.default_rng(1234)


def _loss_of(model, x, target, loss):
    return loss(model.forward(x), target)[0]


def check_model_gradients(model, x, target, loss, *, directions=2, eps=1e-6, rtol=1e-5):
    """Directional finite differences (float64) for the input and every parameter."""
    model.astype(np.float64)
    x = x.astype(np.float64)
    out = model.forward(x)
    value, g = loss(out, target)
    model.zero_grad()
    gx = model.backward(g)
    params = model.parameters()
    grads = [p.grad.copy() for p in params]
    rng = np.random.default_rng(0)
    # The input.
    for _ in range(directions):
        v = rng.standard_normal(x.shape)
        fd = (_loss_of(model, x + eps * v, target, loss)
              - _loss_of(model, x - eps * v, target, loss)) / (2 * eps)
        assert np.isclose(fd, (gx * v).sum(), rtol=rtol, atol=1e-8), ("input", fd,
                                                                       (gx * v).sum())
    # Each parameter tensor in turn.
    for (name, p), grad in zip(model.named_parameters(), grads):
        for _ in range(directions):
            v = rng.standard_normal(p.value.shape)
            orig = p.value.copy()
            p.value[...] = orig + eps * v
            lp = _loss_of(model, x, target, loss)
            p.value[...] = orig - eps * v
            lm = _loss_of(model, x, target, loss)
            p.value[...] = orig
            fd = (lp - lm) / (2 * eps)
            assert np.isclose(fd, (grad * v).sum(), rtol=rtol, atol=1e-8), (name, fd,
                                                                              (grad * v).sum())
    return value


def test_gradients_2d_every_layer_kind():
    rng = np.random.default_rng(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, rng=rng),
        nn.BatchNorm(4),
        nn.PReLU(4),
        nn.Residual(nn.Sequential(nn.Conv2d(4, 4, 3, padding="same", padding_mode="reflect",
                                            rng=rng), nn.Tanh())),
        nn.MaxPool(2),
        nn.SkipConcat(nn.Sequential(nn.AvgPool(2), nn.Conv2d(4, 2, 1, rng=rng),
                                    nn.Upsample(2, mode="linear"))),
        nn.LeakyReLU(negative_slope=0.1),
        nn.UnsharedConv(2, 6, 3, 3, input_size=(4, 4), rng=rng),
        nn.Sigmoid(),
        nn.ConvTranspose2d(3, 3, 2, stride=2, rng=rng),
        nn.TiledConv(2, 3, 4, 3, tiles=2, padding=1, rng=rng),
        nn.AbsRectify(),
        nn.LpPool(2, 2),
        nn.Upsample(2),
        nn.ReLU(),
        nn.GlobalMaxPool(),
        nn.Flatten(),
        nn.Dense(4, 5, rng=rng),
    )
    x = rng.standard_normal((3, 2, 8, 8))
    y = np.array([0, 3, 4])
    check_model_gradients(model, x, y, nn.CrossEntropy(class_weights=[1, 2, 1, 1, 3]))


def test_gradients_1d_and_3d_and_dropout_in_eval():
    rng = np.random.default_rng(1)
    m1 = nn.Sequential(nn.Conv1d(1, 3, 5, stride=2, rng=rng), nn.BatchNorm(3), nn.ReLU(),
                       nn.MaxPool(2), nn.Conv1d(3, 3, 3, dilation=2, groups=3, rng=rng),
                       nn.GlobalAvgPool(), nn.Flatten(), nn.Dense(3, 2, rng=rng),
                       nn.LogSoftmax())
    check_model_gradients(m1, rng.standard_normal((2, 1, 30)), rng.standard_normal((2, 2)),
                          nn.MSE())
    m3 = nn.Sequential(nn.Conv3d(1, 2, 3, padding=1, padding_mode="circular", rng=rng),
                       nn.BatchNorm(2), nn.ReLU(), nn.AvgPool(2, count_include_pad=False),
                       nn.ConvTranspose3d(2, 2, 2, stride=2, rng=rng), nn.Dropout(0.3),
                       nn.Softmax())
    m3.children["5"].eval()
    target = rng.standard_normal((2, 2, 4, 4, 4))
    check_model_gradients(m3, rng.standard_normal((2, 1, 4, 4, 4)), target, nn.MSE())


def test_gradients_unet_with_dice_and_cross_entropy():
    model = nn.models.unet(2, 1, 3, widths=(2, 3), seed=3)
    x = RNG.standard_normal((2, 1, 4, 4))
    y = RNG.integers(0, 3, (2, 4, 4))
    check_model_gradients(model, x, y, nn.CrossEntropy() + nn.Dice())


def test_gradients_resnet_and_m5_builders():
    rn = nn.models.resnet(2, 1, 3, widths=(2, 3), seed=0)
    check_model_gradients(rn, RNG.standard_normal((2, 1, 6, 6)), np.array([0, 2]),
                          nn.CrossEntropy(), directions=1)
    m5 = nn.models.m5(2, width=2, first_kernel=5, first_stride=2, pool=2, seed=0)
    check_model_gradients(m5, RNG.standard_normal((2, 1, 70)), np.array([1, 0]),
                          nn.CrossEntropy(), directions=1)


def test_eval_mode_batchnorm_and_dropout():
    bn = nn.BatchNorm(3)
    x = RNG.standard_normal((50, 3, 4)).astype(np.float32) * 3 + 2
    y = bn(x)
    assert np.allclose(y.mean(axis=(0, 2)), 0, atol=1e-5)
    assert np.allclose(y.var(axis=(0, 2)), 1, atol=1e-3)
    # The running estimates moved 10% of the way to the batch statistics.
    assert np.allclose(bn.buffers["running_mean"], 0.1 * x.mean(axis=(0, 2)), rtol=1e-5)
    n = x.shape[0] * x.shape[2]
    assert np.allclose(bn.buffers["running_var"],
                       0.9 + 0.1 * x.var(axis=(0, 2)) * n / (n - 1), rtol=1e-5)
    bn.eval()
    m, v = bn.buffers["running_mean"], bn.buffers["running_var"]
    assert np.allclose(bn(x), (x - m[:, None]) / np.sqrt(v[:, None] + 1e-5), atol=1e-5)
    d = nn.Dropout(0.5, seed=0)
    z = d(np.ones((1000,), np.float32))
    assert set(np.unique(z)) <= {0.0, 2.0} and 400 < (z == 0).sum() < 600
    assert np.array_equal(d.backward(np.ones(1000, np.float32)), z)
    d.eval()
    assert np.array_equal(d(np.ones(5, np.float32)), np.ones(5))


def test_upsample_hand_examples():
    x = np.array([[[0.0, 1.0]]])
    assert np.allclose(nn.Upsample(2, mode="linear")(x), [[[0, 0.25, 0.75, 1]]])
    assert np.allclose(nn.Upsample(2)(x), [[[0, 0, 1, 1]]])
    x2 = np.arange(4.0).reshape(1, 1, 2, 2)
    up = nn.Upsample((1, 3))(x2)
    assert np.array_equal(up[0, 0], [[0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3]])


def test_cross_entropy_hand_example_and_weights():
    logits = np.array([[0.0, np.log(3.0)], [0.0, 0.0]])
    # p = [1/4, 3/4] and [1/2, 1/2]
    v, g = nn.CrossEntropy()(logits, np.array([1, 0]))
    assert np.isclose(v, -(np.log(0.75) + np.log(0.5)) / 2)
    assert np.allclose(g, [[0.125, -0.125], [-0.25, 0.25]])
    v, _ = nn.CrossEntropy(class_weights=[1.0, 3.0])(logits, np.array([1, 0]))
    assert np.isclose(v, -(3 * np.log(0.75) + np.log(0.5)) / 4)
    with pytest.raises(ValueError, match="target"):
        nn.CrossEntropy()(logits, np.array([2, 0]))
    with pytest.raises(TypeError, match="integer"):
        nn.CrossEntropy()(logits, np.array([1.0, 0.0]))


def test_dice_and_metrics():
    t = np.array([[[0, 1], [2, 2]]])
    perfect = 50.0 * (np.eye(3)[t].transpose(0, 3, 1, 2) - 0.5)
    v, _ = nn.Dice(eps=1e-9)(perfect, t)
    assert v < 1e-6
    assert np.allclose(nn.dice_scores(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), 3),
                       [1.0, 2 / 3, 2 / 3])
    assert nn.accuracy(np.array([[1, 2], [3, 0]]), np.array([1, 1])) == 0.5


def test_optimisers_hand_steps():
    p = nn.Parameter(np.array([1.0, -2.0]))
    p.grad[...] = [0.5, 0.5]
    opt = nn.SGD([p], lr=0.1, momentum=0.9, weight_decay=0.1)
    opt.step()  # g = 0.5 + 0.1 * w
    assert np.allclose(p.value, [1 - 0.1 * 0.6, -2 - 0.1 * 0.3])
    q = nn.Parameter(np.array([1.0, -2.0]))
    q.grad[...] = [3.0, -0.001]
    adam = nn.Adam([q], lr=0.01)
    adam.step()  # the first Adam step is lr * sign(g)
    assert np.allclose(q.value, [0.99, -1.99], atol=1e-6)
    with pytest.raises(ValueError, match="lr"):
        nn.Adam([q], lr=-1)


def test_layer_errors_are_clear():
    with pytest.raises(ValueError, match=r"`in_channels` \(=6\).*`groups` \(=4\)"):
        nn.Conv2d(6, 8, 3, groups=4)
    with pytest.raises(ValueError, match="expects `in_channels` \\(=3\\)"):
        nn.Conv2d(3, 4, 3)(np.zeros((1, 2, 5, 5), np.float32))
    with pytest.raises(ValueError, match="ndim"):
        nn.Conv(4, 1, 1, 3)
    with pytest.raises(ValueError, match="in_features"):
        nn.Dense(3, 2)(np.zeros((1, 4)))
    with pytest.raises(ValueError, match="merge"):
        nn.Parallel(nn.Identity(), merge="mul")
    with pytest.raises(TypeError, match="Module"):
        nn.Sequential(nn.ReLU(), "relu")


def test_save_load_roundtrip(tmp_path):
    model = nn.models.resnet(2, 1, 4, widths=(3, 5), seed=1)
    model.children["0"].training = True
    x = RNG.standard_normal((2, 1, 8, 8)).astype(np.float32)
    model.forward(x)  # move the BatchNorm running statistics off their start values
    model.eval()
    ref = model(x)
    path = tmp_path / "m.h5"
    nn.save(path, model, meta={"classes": ["a", "b", "c", "d"]})
    back = nn.load(path)
    assert type(back) is nn.Sequential and not back.training
    assert np.array_equal(back(x), ref)
    assert nn.load_checkpoint(path)["meta"]["classes"] == ["a", "b", "c", "d"]
    c = nn.Conv2d(2, 3, 3, padding=(1, 2), rng=0)
    nn.save(tmp_path / "c.h5", c)
    c2 = nn.load(tmp_path / "c.h5")
    assert type(c2).__name__ == "Conv2d" and c2.kwargs["padding"] == [1, 2]
    with pytest.raises(FileNotFoundError):
        nn.load(tmp_path / "missing.h5")


def _digits(n=400):
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images[:n, None] / 16).astype(np.float32)
    return x, d.target[:n]


def test_fit_learns_digits_and_resume_is_exact(tmp_path):
    pytest.importorskip("sklearn")
    x, y = _digits()
    kw = dict(loss=nn.CrossEntropy(), epochs=6, batch_size=32, seed=5, progress=False,
              verbose=False, lr=1e-2)
    model = nn.models.vgg(2, 1, 10, (8, 16), input_size=(8, 8), seed=0)
    hist = nn.fit(model, (x[:300], y[:300]), val=(x[300:], y[300:]), **kw)
    assert len(hist) == 6 and hist["val_accuracy"][-1] > 0.8
    assert hist["loss"][-1] < hist["loss"][0]
    # Two epochs, stop, resume to six: the same weights as six epochs in one go.
    ck = tmp_path / "ck.h5"
    a = nn.models.vgg(2, 1, 10, (8, 16), input_size=(8, 8), seed=0)
    nn.fit(a, (x[:300], y[:300]), checkpoint=ck, restore_best=False,
           **{**kw, "epochs": 2})
    b = nn.models.vgg(2, 1, 10, (8, 16), input_size=(8, 8), seed=7)  # other init: replaced
    h = nn.fit(b, (x[:300], y[:300]), checkpoint=ck, resume=True, restore_best=False, **kw)
    c = nn.models.vgg(2, 1, 10, (8, 16), input_size=(8, 8), seed=0)
    nn.fit(c, (x[:300], y[:300]), restore_best=False, **kw)
    assert len(h) == 6
    for (k, pb), (_, pc) in zip(b.named_parameters(), c.named_parameters()):
        assert np.allclose(pb.value, pc.value, rtol=1e-5, atol=1e-6), k


def test_early_stopping_and_best_model():
    x = RNG.standard_normal((40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int)
    model = nn.Sequential(nn.Dense(3, 2, rng=0))
    # A huge learning rate makes the validation loss rise: training stops early and the
    # best epoch's weights come back.
    hist = nn.fit(model, (x, y), val=(x, y), loss=nn.CrossEntropy(), optimizer="sgd",
                  lr=50.0, epochs=30, early_stopping=2, progress=False, verbose=False)
    assert len(hist) < 30
    best = hist.best_epoch
    assert np.isclose(nn.evaluate(model, (x, y), loss=nn.CrossEntropy())["loss"],
                      hist["val_loss"][best], rtol=1e-5)


def test_builders_are_seeded_and_shaped():
    a = nn.models.unet(3, 1, 2, widths=(2, 4), seed=0)
    b = nn.models.unet(3, 1, 2, widths=(2, 4), seed=0)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert np.array_equal(pa.value, pb.value)
    assert a(np.zeros((1, 1, 4, 8, 8), np.float32)).shape == (1, 2, 4, 8, 8)
    assert nn.models.volume_classifier(3, widths=(2, 2))(
        np.zeros((2, 1, 8, 8, 8), np.float32)).shape == (2, 3)
    assert nn.models.spectrogram_classifier(5, widths=(2, 4))(
        np.zeros((2, 1, 16, 20), np.float32)).shape == (2, 5)
    assert nn.models.lenet(1, 10, (8, 8))(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)
    with pytest.raises(ValueError, match="kind"):
        nn.models.image_classifier(1, 10, kind="alexnet")


def test_grad_cam_matches_the_definition_on_a_linear_head():
    rng = np.random.default_rng(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1, rng=rng), nn.ReLU(),
                          nn.GlobalAvgPool(), nn.Flatten(), nn.Dense(3, 2, rng=rng))
    model[4].weight.value[1] = [1.0, -0.5, 2.0]  # mixed signs: a map that is not all zero
    x = rng.standard_normal((2, 1, 6, 6)).astype(np.float32)
    cam, cls = nn.grad_cam(model, x, class_index=1)
    a = model[:2](x)
    w = model[4].weight.value[1]
    want = np.maximum(np.einsum("c,nc...->n...", w / 36, a), 0)
    want /= want.reshape(2, -1).max(axis=1)[:, None, None]
    assert cam.shape == (2, 6, 6) and np.array_equal(cls, [1, 1])
    assert np.allclose(cam, want, atol=1e-5)
    # 3-D, upsampled to the input's size.
    m3 = nn.models.volume_classifier(2, widths=(2,), seed=0)
    cam3, _ = nn.grad_cam(m3, rng.standard_normal((1, 1, 6, 6, 6)).astype(np.float32))
    assert cam3.shape == (1, 6, 6, 6) and 0 <= cam3.min() and cam3.max() <= 1


def test_plots_write_png(tmp_path):
    pytest.importorskip("matplotlib")
    from gridconv.nn import plots

    hist = nn.History()
    hist.append(loss=1.0, val_loss=1.1, accuracy=0.5, val_accuracy=0.4)
    hist.append(loss=0.5, val_loss=0.7, accuracy=0.8, val_accuracy=0.7)
    plots.plot_history(hist, tmp_path / "h.png")
    plots.plot_kernels(RNG.standard_normal((6, 1, 5, 5)), tmp_path / "k.png")
    plots.plot_kernels(RNG.standard_normal((6, 1, 9)), tmp_path / "k1.png")
    plots.plot_saliency(RNG.standard_normal((2, 1, 8, 8)), RNG.random((2, 8, 8)),
                        tmp_path / "s.png", titles=["a", "b"])
    for name in ("h", "k", "k1", "s"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
