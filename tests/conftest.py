import os

# Quiet TensorFlow's C++ start-up logs; tests pick the Keras backend from KERAS_BACKEND.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
