"""gafi-opt: the GaFi pipeline as a chain of Optuna studies."""
