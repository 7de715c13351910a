"""A GCA loss in your own Flax/optax training loop.

A small MLP encoder learns 8x8 handwritten digits (scikit-learn's
bundled copy, no download) from two augmented views of each image,
with `gca_jax.gca_uot` as the loss and `optax.adam` as the optimiser:

    python docs/examples/own_training_loop.py
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import gca_jax


class Encoder(nn.Module):
  """Two hidden layers, then a linear projection to the embedding."""

  width: int = 128
  embedding: int = 32

  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(self.width)(x))
    x = nn.relu(nn.Dense(self.width)(x))
    return nn.Dense(self.embedding)(x)


def augment(key, images):
  """One random view of each ``(B, 64)`` image in [0, 1]: pixel dropout,
  a random brightness scale and Gaussian noise."""
  drop_key, scale_key, noise_key = jax.random.split(key, 3)
  keep = jax.random.bernoulli(drop_key, 0.8, images.shape)
  scale = jax.random.uniform(
      scale_key, (images.shape[0], 1), minval=0.7, maxval=1.3)
  noise = 0.1 * jax.random.normal(noise_key, images.shape)
  return images * keep * scale + noise


def make_train_step(model, optimizer):
  """A jitted step: two views, their embeddings, GCA-UOT, one Adam
  update."""

  def loss_fn(params, key, images):
    key1, key2 = jax.random.split(key)
    z1 = model.apply(params, augment(key1, images))
    z2 = model.apply(params, augment(key2, images))
    # eps is the temperature.
    return gca_jax.gca_uot(z1, z2, eps=0.5, iters=10)

  @jax.jit
  def train_step(params, opt_state, key, images):
    loss, grads = jax.value_and_grad(loss_fn)(params, key, images)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  return train_step


def train(steps: int = 60, batch_size: int = 256,
          seed: int = 0) -> list[float]:
  """Trains the encoder ``steps`` steps; returns each step's loss."""
  # (1797, 64) images in [0, 1].
  images = jnp.asarray(load_digits().data / 16.0, jnp.float32)
  model = Encoder()
  optimizer = optax.adam(1e-3)
  key, init_key = jax.random.split(jax.random.PRNGKey(seed))
  params = model.init(init_key, images[:1])
  opt_state = optimizer.init(params)
  train_step = make_train_step(model, optimizer)
  rng = np.random.default_rng(seed)
  losses = []
  for _ in range(steps):
    batch = images[rng.choice(len(images), batch_size, replace=False)]
    key, step_key = jax.random.split(key)
    params, opt_state, loss = train_step(
        params, opt_state, step_key, batch)
    losses.append(float(loss))
  return losses


if __name__ == "__main__":
  losses = train()
  print(f"loss: first step {losses[0]:.4f}, "
        f"last step {losses[-1]:.4f}")
