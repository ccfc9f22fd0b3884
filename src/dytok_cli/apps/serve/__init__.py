"""`dytok serve`: an OpenAI-compatible server over one model, with the videos it is asked about kept warm
(`service`), the request and response shapes (`protocol`) and the HTTP routes (`app`)."""
