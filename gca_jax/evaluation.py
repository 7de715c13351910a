"""Evaluation of a (frozen) encoder: embeddings, kNN monitor, linear probe.

* `make_embed_fn`/`embed_split`: encoder features ``h`` (and projections ``z``)
  of a whole split in evaluation mode (running BN statistics), batched and
  sharded over the devices of the mesh (images larger than the model's input
  are centre-cropped, see `preprocess_for_eval`); `embed_host_split` does
  the same for a split too large for memory, decoded by a host loader.
* `knn_accuracy`: the weighted kNN monitor of InstDisc/SimCLR (cosine
  similarity, k nearest training features vote with weight exp(sim / T),
  k=200, T=0.1).
* `linear_probe`: the ``linear`` protocol: a linear softmax classifier
  trained with optax (full-batch AdamW) on the standardised frozen features
  of the un-augmented train split; returns test accuracy. A fast monitor,
  not the paper's CIFAR protocol (that one fine-tunes the whole encoder,
  see `gca_jax.finetune`).
* `view_wdm`: the Wasserstein-dependency-measure lower bound
  (`gca_jax.metrics.wdm_lower_bound`) between the encoder features of two
  augmented views of a fixed subset of the test split.
* `evaluate_encoder`: the kNN monitor, optionally the linear probe, and the
  WDM bound of an encoder on a dataset, as a run's config asks.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gca_jax import metrics
from gca_jax.data import augment, loader
from gca_jax.losses import l2_normalize
from gca_jax.sharding import batch_sharded, global_array, process_local_array, replicated


def preprocess_for_eval(images_uint8, *, mean, std, image_size=None):
  """Normalised float32 images of side ``image_size`` (if given).

  Images at least ``image_size`` on both sides are centre-cropped to it: with
  the host's square of ``load_size`` (shorter side resized, centre square)
  this is the standard evaluation transform, e.g. resize 256, centre-crop
  224. Smaller images are resized (bilinear) up to ``image_size``.
  """
  x = augment.normalize(images_uint8, mean, std)
  if not image_size:
    return x
  height, width = x.shape[1:3]
  if height >= image_size and width >= image_size:
    top, left = (height - image_size) // 2, (width - image_size) // 2
    x = x[:, top:top + image_size, left:left + image_size]
  if x.shape[1:3] != (image_size, image_size):
    x = jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[3]),
                         "bilinear")
  return x


def make_embed_fn(model, mesh, *, mean, std, image_size=None):
  """jit-compiled ``embed(variables, images_uint8) -> (features, projections)``.

  Images are sharded over the mesh's (only) axis; outputs are replicated.
  """
  @functools.partial(jax.jit, out_shardings=(replicated(mesh),) * 2)
  def embed(variables, images_uint8):
    x = preprocess_for_eval(images_uint8, mean=mean, std=std, image_size=image_size)
    out = model.apply(variables, x, train=False)
    return out.features, out.projection

  return embed


def eval_batch_size(batch_size: int, num_devices: int) -> int:
  """``batch_size`` rounded down to a multiple of ``num_devices`` (at least
  one row per device): the fixed global batch of `embed_split`."""
  return max(num_devices, batch_size // num_devices * num_devices)


def pad_batch(chunk: np.ndarray, batch_size: int) -> np.ndarray:
  """``chunk`` padded to ``batch_size`` rows by repeating its last row, so
  every batch has one shape (and compiles once)."""
  if len(chunk) < batch_size:
    chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - len(chunk), 0)])
  return chunk


def embed_batches(embed, variables, batches, num_examples: int, place):
  """(features, projections) as numpy of the first ``num_examples`` rows of
  fixed-size, end-padded global ``batches`` (host arrays; ``place`` makes
  each a sharded global array). Outputs are fetched one batch behind, so
  reading the next batch overlaps the device work."""
  features, projections, pending = [], [], None
  for batch in batches:
    outputs = embed(variables, place(batch))
    if pending is not None:
      features.append(np.asarray(pending[0]))
      projections.append(np.asarray(pending[1]))
    pending = outputs
  if pending is not None:
    features.append(np.asarray(pending[0]))
    projections.append(np.asarray(pending[1]))
  return (np.concatenate(features)[:num_examples],
          np.concatenate(projections)[:num_examples])


def embed_split(embed, variables, images, mesh, *, batch_size: int = 512):
  """(features, projections) as numpy for all ``images`` (numpy or lazy)."""
  data_sharding = batch_sharded(mesh)
  batch_size = eval_batch_size(batch_size, mesh.devices.size)
  batches = (pad_batch(np.asarray(images[start:start + batch_size]), batch_size)
             for start in range(0, len(images), batch_size))
  return embed_batches(embed, variables, batches, len(images),
                       lambda batch: global_array(batch, data_sharding))


def embed_host_split(embed, variables, split, mesh, *, batch_size: int = 512,
                     worker_count: int = 0):
  """As `embed_split`, for a split too large for memory: a grain loader
  decodes the images batch by batch, each process only its rows."""
  batch_size = eval_batch_size(batch_size, mesh.devices.size)
  batches = loader.process_eval_loader(split, global_batch_size=batch_size,
                                       worker_count=worker_count)
  data_sharding = batch_sharded(mesh)
  return embed_batches(embed, variables, (batch["image"] for batch in batches),
                       len(split), lambda images: process_local_array(images, data_sharding))


def embed_any_split(embed, variables, split, mesh, *, worker_count: int = 0):
  """Features of a split: from memory, or from a host loader if it is lazy."""
  if split.in_memory or not len(split):
    return embed_split(embed, variables, split.images, mesh)
  return embed_host_split(embed, variables, split, mesh, worker_count=worker_count)


def knn_accuracy(bank_features, bank_labels, query_features, query_labels,
                 num_classes: int, *, k: int = 200, temperature: float = 0.1,
                 chunk_size: int = 1024) -> float:
  """Weighted kNN accuracy of the InstDisc/SimCLR monitor."""
  bank = l2_normalize(jnp.asarray(bank_features, jnp.float32))
  bank_labels = jnp.asarray(bank_labels)
  k = min(k, bank.shape[0])

  @jax.jit
  def predict(queries):
    similarity = l2_normalize(queries) @ bank.T
    top_similarity, top_index = jax.lax.top_k(similarity, k)
    weights = jnp.exp(top_similarity / temperature)
    votes = jax.nn.one_hot(bank_labels[top_index], num_classes) * weights[..., None]
    return jnp.argmax(votes.sum(axis=1), axis=-1)

  query_features = np.asarray(query_features, np.float32)
  predictions = np.concatenate([
      np.asarray(predict(query_features[i:i + chunk_size]))
      for i in range(0, len(query_features), chunk_size)])
  return float(np.mean(predictions == np.asarray(query_labels)))


def linear_probe(train_features, train_labels, test_features, test_labels,
                 num_classes: int, *, steps: int = 500, learning_rate: float = 0.01,
                 weight_decay: float = 1e-4) -> float:
  """Test accuracy of a linear classifier on frozen, standardised features.

  Full-batch AdamW with a cosine schedule on the softmax cross-entropy; the
  features are standardised with the train split's statistics.
  """
  train_x = np.asarray(train_features, np.float32)
  mean, std = train_x.mean(0), train_x.std(0) + 1e-6
  train_x = jnp.asarray((train_x - mean) / std)
  test_x = jnp.asarray((np.asarray(test_features, np.float32) - mean) / std)
  train_y = jnp.asarray(train_labels)
  tx = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps),
                   weight_decay=weight_decay)
  params = {"w": jnp.zeros((train_x.shape[1], num_classes)),
            "b": jnp.zeros((num_classes,))}

  def loss_fn(params):
    logits = train_x @ params["w"] + params["b"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, train_y).mean()

  @jax.jit
  def fit(params):
    def step(carry, _):
      params, opt_state = carry
      grads = jax.grad(loss_fn)(params)
      updates, opt_state = tx.update(grads, opt_state, params)
      return (optax.apply_updates(params, updates), opt_state), None
    (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
    return params

  params = fit(params)
  predictions = jnp.argmax(test_x @ params["w"] + params["b"], axis=-1)
  return float(jnp.mean(predictions == jnp.asarray(test_labels)))


# The fixed subset of `view_wdm`: the first test examples, and the key of
# their two views (the same at every evaluation, so values compare over epochs).
WDM_EXAMPLES = 512
WDM_VIEWS_SEED = 0


def _as_uint8(views, mean, std) -> np.ndarray:
  """Normalised float views back to uint8 pixels (what ``embed`` takes);
  rounding to the nearest level is the only change."""
  pixels = np.asarray(views) * np.asarray(std, np.float32) + np.asarray(mean, np.float32)
  return np.clip(np.rint(pixels * 255.0), 0, 255).astype(np.uint8)


def view_wdm(config, embed, variables, split, mesh, *, mean, std) -> float:
  r"""WDM lower bound of an encoder's features of two augmented views.

  The encoder's features ``h`` (what kNN and the probe see) of two views of
  each of the first `WDM_EXAMPLES` examples of ``split`` (the test split in
  `evaluate_encoder`), drawn with ``config.augmentation`` under the fixed key
  ``WDM_VIEWS_SEED`` (the same views at every evaluation and for every
  encoder), give

  .. math::

    \mathrm{WDM}(h_1; h_2) \ge \frac{1}{\sqrt 2}\Big(\overline{\cos(h_{1i}, h_{2i})}
      - \overline{\cos(h_{1i}, h_{2j})}_{i \ne j}\Big)

  (`gca_jax.metrics.wdm_lower_bound`). Augmented views, not the un-augmented
  images: with one view per example both sides would be the same features
  and the bound would measure only their spread, not the dependence between
  views that the contrastive objective aligns.
  """
  count = min(WDM_EXAMPLES, len(split))
  images = np.asarray(split.images[:count], np.uint8)
  views = augment.two_views(jax.random.key(WDM_VIEWS_SEED), jnp.asarray(images),
                            policy=config.augmentation, mean=mean, std=std,
                            out_size=config.get("image_size"))
  h1, h2 = (embed_split(embed, variables, _as_uint8(v, mean, std), mesh)[0] for v in views)
  return float(metrics.wdm_lower_bound(jnp.asarray(h1), jnp.asarray(h2)))


def evaluate_encoder(config, embed, variables, dataset, mesh, *, probe: bool) -> dict:
  """kNN accuracy (``knn_acc``), if ``probe`` linear-probe accuracy
  (``linear_probe_acc``), and the WDM bound of two augmented views of a fixed
  test subset (``wdm_lower_bound``, `view_wdm`) of an encoder, with the
  settings of ``config``."""
  workers = config.data_workers
  train_h, _ = embed_any_split(embed, variables, dataset.train, mesh, worker_count=workers)
  test_h, _ = embed_any_split(embed, variables, dataset.test, mesh, worker_count=workers)
  result = {"knn_acc": knn_accuracy(
      train_h, dataset.train.labels, test_h, dataset.test.labels,
      dataset.num_classes, k=config.knn_k, temperature=config.knn_temperature)}
  if probe:
    result["linear_probe_acc"] = linear_probe(
        train_h, dataset.train.labels, test_h, dataset.test.labels,
        dataset.num_classes, steps=config.linear_probe_steps,
        learning_rate=config.linear_probe_learning_rate,
        weight_decay=config.linear_probe_weight_decay)
  result["wdm_lower_bound"] = view_wdm(config, embed, variables, dataset.test, mesh,
                                       mean=tuple(dataset.mean), std=tuple(dataset.std))
  return result
