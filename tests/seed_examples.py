"""The request bodies of the two documented APIs' own examples, copied verbatim from their documents.

Seed 000 is the local kernel2 chat endpoint's documentation, seed 001 the registry's. The curl bodies are
kept as the exact JSON text of their ``-d`` argument; seed 001's Python example as its exact ``data`` dict.
"""

# Seed 000, "Request Parameters": the full request, with its placeholder role id ("uuid-string").
KERNEL2_PARAMETERS = """{
"messages": [
{"role": "system", "content": "You are a helpful assistant."},
{"role": "user", "content": "Hello, who are you?"},
{"role": "assistant", "content": "I am a helpful assistant."},
{"role": "user", "content": "What can you do for me?"}
],
"metadata": {
"enable_l0_retrieval": true,
"role_id": "uuid-string"
},
"stream": true,
"model": "gpt-3.5-turbo",
"temperature": 0.1,
"max_tokens": 2000
}"""

# Seed 000, "cURL Request Example" (the Python example sends the same body).
KERNEL2_CURL = """{
"messages": [
{"role": "system", "content": "You are a helpful assistant."},
{"role": "user", "content": "Tell me about artificial intelligence."}
],
"stream": true
}"""

# Seed 001, "cURL".
REGISTRY_CURL = """{
"messages": [
{"role": "system", "content": "You are a helpful assistant."},
{"role": "user", "content": "Hello, please introduce yourself."}
],
"metadata": {
"enable_l0_retrieval": false,
"role_id": "default_role"
},
"temperature": 0.7,
"max_tokens": 2000,
"stream": true
}"""

# Seed 001, "Python": its ``data`` dict.
REGISTRY_PYTHON = {
"messages": [
{"role": "system", "content": "You are a helpful assistant."},
{"role": "user", "content": "Hello, please introduce yourself."}
],
"metadata": {
"enable_l0_retrieval": False,
"role_id": "default_role"
},
"temperature": 0.7,
"max_tokens": 2000,
"stream": True
}


def http_client_example(host, path, data, headers=None):
    """Seed 001's ``http.client`` example, as documented, against ``host`` (``"127.0.0.1:8002"``).

    Returns what it prints, and whether it saw ``data: [DONE]``.
    """
    import http.client
    import json

    url = host
    headers = headers or {"Content-Type": "application/json"}
    printed = []
    done = False
    # Prepare the connection
    conn = http.client.HTTPConnection(url)
    # Send the POST request
    conn.request("POST", path, body=json.dumps(data), headers=headers)
    # Get the response
    response = conn.getresponse()
    # Read the body line by line
    for line in response:
        if line:
            decoded_line = line.decode('utf-8').strip()
            if decoded_line == 'data: [DONE]':
                done = True
                break
            if decoded_line.startswith('data: '):
                try:
                    json_str = decoded_line[6:]
                    chunk = json.loads(json_str)
                    content = chunk['choices'][0]['delta'].get('content', '')
                    if content:
                        printed.append(content)
                except json.JSONDecodeError:
                    pass
    # Close the connection when done
    conn.close()
    return "".join(printed), done
