"""Spoken-language identification (en, es, fr, it, ru) on real recordings, in 1-D or 2-D.

Data: the voice prompts of Debian's ``asterisk-core-sounds-{en,es,fr,it,ru}-wav`` packages
(2831 clips at 8 kHz, one speaker per language, the same prompt texts in each language).
Clips are trimmed, cut into 1-second windows and normalised; the split is **by prompt**:
every window of a prompt text (in all five languages) lands on one side only, so the test
set holds recordings, and sentences, never heard in training. Chance is 20%.

* ``--input waveform`` (default): an M5-style 1-D net on the raw 8000-sample windows;
* ``--input spectrogram``: a 2-D VGG-style net on log-mel spectrograms (SciPy STFT, 40 mel
  bands), computed on the fly as the dataset's transform.

The windows are converted once to HDF5 (``<out>/data/``); the script trains with a
validation split (by prompt as well), prints the test accuracy, and saves the model,
training curves, first-layer kernels and Grad-CAM maps (which parts of the waveform or
spectrogram decided the language).

Usage::

    python examples/spoken_language.py
    python examples/spoken_language.py --input spectrogram
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common  # noqa: E402

from gridconv import data, datasets, nn  # noqa: E402

SAMPLE_RATE = 8000


def convert(folder: Path, smoke: bool, seed: int):
    """Windows -> train/test HDF5 files split by prompt, written once."""
    tag = "_smoke" if smoke else ""
    train_path, test_path = folder / f"speech{tag}_train.h5", folder / f"speech{tag}_test.h5"
    if train_path.exists() and test_path.exists():
        return train_path, test_path
    print("reading the Asterisk prompts (once) ...", flush=True)
    sl = datasets.spoken_languages(seconds=1.0, hop_seconds=0.5,
                                   max_clips=12 if smoke else None)
    train_idx, test_idx = data.group_split(sl.name, 0.2, seed=seed)
    _, group = np.unique(sl.name, return_inverse=True)
    attrs = {"languages": list(sl.languages), "sample_rate": sl.sample_rate}
    for path, idx in ((train_path, train_idx), (test_path, test_idx)):
        data.write_hdf5(path, sl.x[idx], sl.y[idx], attrs=attrs)
        with h5py.File(path, "a") as f:  # the prompt of each window, for splitting
            f.create_dataset("group", data=group[idx])
    print(f"wrote {len(train_idx)} training and {len(test_idx)} test windows from "
          f"{len(sl.files)} clips ({len(np.unique(sl.name))} prompts)")
    return train_path, test_path


def main(argv=None) -> int:
    p = _common.base_parser(__doc__.splitlines()[0], 12, 32, 2e-3, "out/speech")
    p.add_argument("--input", choices=("waveform", "spectrogram"), default="waveform")
    args = p.parse_args(argv)
    out = _common.out_dir(args.out)
    train_path, test_path = convert(_common.out_dir(out / "data"), args.smoke, args.seed)
    if args.smoke:
        args.epochs = 1

    spec = (data.Spectrogram(SAMPLE_RATE, n_fft=256, hop_length=80, n_mels=40)
            if args.input == "spectrogram" else None)
    train_all = data.HDF5Dataset(train_path, transform=spec)
    test = data.HDF5Dataset(test_path, transform=spec)
    languages = list(train_all.attrs["languages"])
    with h5py.File(train_path, "r") as f:
        groups = f["group"][()]
    fit_idx, val_idx = data.group_split(groups, 0.15, seed=args.seed + 1)
    train, val = train_all.subset(fit_idx), train_all.subset(val_idx)

    k = len(languages)
    if args.input == "waveform":
        model = nn.models.m5(k, width=32, seed=args.seed)
    else:
        model = nn.models.spectrogram_classifier(k, widths=(16, 32, 64), dropout=0.2,
                                                 seed=args.seed)
    print(f"{args.input}: {len(train)} training, {len(val)} validation and {len(test)} test "
          f"windows of {train.sample_shape}; {model.num_parameters()} parameters; "
          f"{_common.threads()}")

    stem = f"speech_{args.input}"
    with _common.Timer() as t:
        history = nn.fit(model, train, val=val, loss=nn.CrossEntropy(), lr=args.lr,
                         epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                         lr_schedule="cosine", early_stopping=4,
                         checkpoint=out / f"{stem}_checkpoint.h5",
                         meta={"languages": languages}, progress=not args.no_progress)
    nn.save(out / f"{stem}_model.h5", model, history=history,
            meta={"languages": languages, "input": args.input, "sample_rate": SAMPLE_RATE})
    res = nn.evaluate(model, test, loss=nn.CrossEntropy(), batch_size=128)
    pred = np.argmax(nn.predict(model, test, batch_size=128), axis=1)
    truth = test.labels()
    confusion = np.zeros((k, k), int)
    np.add.at(confusion, (truth, pred), 1)

    pick = np.concatenate([np.flatnonzero(truth == c)[:2] for c in range(k)])
    x, y = test[pick]
    cams, cls = nn.grad_cam(model, x)
    titles = [f"{languages[c]} (true {languages[t_]})" for c, t_ in zip(cls, y)]
    _common.pictures(out, stem, model, history, _common.first_conv(model), x, cams, titles)
    print(f"\n{args.input}: test accuracy {res['accuracy']:.4f} on {len(test)} windows of "
          f"unseen prompts (chance {1 / k:.2f}); {len(history)} epochs in {t.seconds:.0f} s")
    print("confusion (rows: true, columns: predicted):")
    print("      " + " ".join(f"{lang:>5}" for lang in languages))
    for lang, row in zip(languages, confusion):
        print(f"{lang:>5} " + " ".join(f"{v:5d}" for v in row))
    _common.report(out, stem, {"test_accuracy": res["accuracy"], "test_loss": res["loss"],
                               "chance": 1 / k, "epochs": len(history),
                               "train_seconds": t.seconds})
    return 0


if __name__ == "__main__":
    sys.exit(main())
