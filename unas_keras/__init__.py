"""unas_keras: UNAS neural architecture search for Keras 3 / TensorFlow."""
