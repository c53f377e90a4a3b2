"""flowith_aiohttp: the aiohttp transport for the Flowith client."""
