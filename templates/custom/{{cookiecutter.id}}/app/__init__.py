"""The code of the {{ cookiecutter.id }} service: routes.py, predict.py and schemas.py."""
