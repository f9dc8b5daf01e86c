"""The Function App: creates the app and registers each flow's blueprint. Nothing else lives here."""

import azure.functions as func

from functions import BLUEPRINTS

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)

for blueprint in BLUEPRINTS:
    app.register_functions(blueprint)
