"""Evaluation of a (frozen) encoder: embeddings, kNN monitor, linear probe.

* `make_embed_fn`/`embed_split`: encoder features ``h`` (and projections ``z``)
  of a whole split in evaluation mode (running BN statistics), batched and
  sharded over the devices of the mesh.
* `knn_accuracy`: the weighted kNN monitor of InstDisc/SimCLR (cosine
  similarity, k nearest training features vote with weight exp(sim / T),
  k=200, T=0.1).
* `linear_probe`: a linear softmax classifier trained with optax on the
  standardised frozen features of the train split; returns test accuracy.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from gca_jax.data import augment


def global_array(host_array: np.ndarray, sharding: NamedSharding) -> jax.Array:
  """A global jax.Array from a host array every process holds in full.

  Works on one or several hosts: each process places only the slices its
  own devices hold.
  """
  host_array = np.asarray(host_array)
  return jax.make_array_from_callback(host_array.shape, sharding,
                                      lambda index: host_array[index])


def preprocess_for_eval(images_uint8, *, mean, std, image_size=None):
  """Normalised float32 images, resized to ``image_size`` if given."""
  x = augment.normalize(images_uint8, mean, std)
  if image_size and x.shape[1:3] != (image_size, image_size):
    x = jax.image.resize(x, (x.shape[0], image_size, image_size, x.shape[3]),
                         "bilinear")
  return x


def make_embed_fn(model, mesh, *, mean, std, image_size=None):
  """jit-compiled ``embed(variables, images_uint8) -> (features, projections)``.

  Images are sharded over the mesh's (only) axis; outputs are replicated.
  """
  replicated = NamedSharding(mesh, P())

  @functools.partial(jax.jit, out_shardings=(replicated, replicated))
  def embed(variables, images_uint8):
    x = preprocess_for_eval(images_uint8, mean=mean, std=std, image_size=image_size)
    out = model.apply(variables, x, train=False)
    return out.features, out.projection

  return embed


def embed_split(embed, variables, images, mesh, *, batch_size: int = 512):
  """(features, projections) as numpy for all ``images`` (numpy or lazy)."""
  data_sharding = NamedSharding(mesh, P(mesh.axis_names[0]))
  num_devices = mesh.devices.size
  batch_size = max(num_devices, batch_size // num_devices * num_devices)
  features, projections = [], []
  for start in range(0, len(images), batch_size):
    chunk = np.asarray(images[start:start + batch_size])
    valid = len(chunk)
    if valid < batch_size:  # pad the last batch so shapes (and compiles) repeat
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - valid, 0)])
    h, z = embed(variables, global_array(chunk, data_sharding))
    features.append(np.asarray(h)[:valid])
    projections.append(np.asarray(z)[:valid])
  return np.concatenate(features), np.concatenate(projections)


def _l2_normalize(x):
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def knn_accuracy(bank_features, bank_labels, query_features, query_labels,
                 num_classes: int, *, k: int = 200, temperature: float = 0.1,
                 chunk_size: int = 1024) -> float:
  """Weighted kNN accuracy of the InstDisc/SimCLR monitor."""
  bank = _l2_normalize(jnp.asarray(bank_features, jnp.float32))
  bank_labels = jnp.asarray(bank_labels)
  k = min(k, bank.shape[0])

  @jax.jit
  def predict(queries):
    similarity = _l2_normalize(queries) @ bank.T
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
