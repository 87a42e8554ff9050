"""Applications on top of the estimator and the API: pictures (:mod:`.plots`), topic
models of text (:mod:`.topics`), similar items (:mod:`.similar`), rank selection
(:mod:`.rank`) and predictions of missing entries (:mod:`.recommend`). Their public
names are names of :mod:`dnmf` too."""
