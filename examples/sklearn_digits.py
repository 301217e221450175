"""An aelab autoencoder as a scikit-learn transformer, on a table of numbers.

scikit-learn's own ``load_digits`` (1,797 rows of 64 values from 0 to 16: 8 x 8 digit images, but here just
a table with columns of different ranges) goes through ``AutoencoderTransformer``, which standardises the
columns itself, trains a dense autoencoder and hands its codes to a logistic regression. ``GridSearchCV``
then picks the code size. Runs in well under a minute on a laptop CPU:

    python examples/sklearn_digits.py
"""
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline

from aelab.sklearn import AutoencoderTransformer

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)

# 1. Codes of a dense autoencoder as the features of a classifier.
pipe = Pipeline([("ae", AutoencoderTransformer(latent_dim=16, hidden_dims=[64], epochs=30, random_state=0)),
                 ("clf", LogisticRegression())])
pipe.fit(X_train, y_train)
ae = pipe.named_steps["ae"]
print(f"{ae.scaling_} scaling of {ae.n_features_in_} columns; training loss {ae.loss_curve_[0]:.3f} -> "
      f"{ae.loss_curve_[-1]:.3f} over {len(ae.loss_curve_)} epochs")
print(f"test accuracy on 16 learned features: {pipe.score(X_test, y_test):.3f}")

# 2. Reconstructions come back in the table's own units (0..16 here).
codes = ae.transform(X_test[:3])
print("a test row:    ", X_test[0, :8].round(1))
print("reconstructed: ", ae.inverse_transform(codes)[0, :8].round(1))

# 3. The code size by cross-validated reconstruction error (score is its negative, higher is better).
search = GridSearchCV(AutoencoderTransformer(hidden_dims=[64], epochs=15, random_state=0),
                      {"latent_dim": [2, 8, 32]}, cv=3)
search.fit(X_train)
for size, score in zip(search.cv_results_["param_latent_dim"], search.cv_results_["mean_test_score"]):
    print(f"latent_dim {size:>2}: mean squared error {-score:.2f} (in the table's units)")
print("best:", search.best_params_)
