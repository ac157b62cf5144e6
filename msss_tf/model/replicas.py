"""The train step's view of tf.distribute replicas (None on one device or off TensorFlow).

`msss_tf.training.distribute` makes the strategy; inside its step, the model asks here
which replica it is and draws its random numbers for the global batch.
"""

def replica_context():
    """The replica context of a multi-replica tf.distribute step, else None (always None
    off TensorFlow)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.distribute.has_strategy() and not tf.distribute.in_cross_replica_context():
        return None
    context = tf.distribute.get_replica_context()
    if context is None or context.num_replicas_in_sync == 1:
        return None
    return context


def global_draw(replica, draw, local_batch):
    """draw(n) for this replica's rows: on one device draw(local_batch); with R replicas,
    every replica makes the same draw(R * local_batch) (same seed state) and keeps its
    own slice [local_batch, ...], so the values are those one device would draw for the
    global batch."""
    if replica is None:
        return draw(local_batch)
    import tensorflow as tf

    everyone = draw(local_batch * replica.num_replicas_in_sync)
    start = tf.cast(replica.replica_id_in_sync_group, tf.int32) * local_batch
    return everyone[start:start + local_batch]
